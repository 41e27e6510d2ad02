//! CSS and JavaScript, compiled into the binary: the pages fetch nothing
//! from elsewhere, so they work offline and in a cluster without egress.

use axum::{
    extract::Path,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

/// The stylesheet of every page.
pub const STYLE_CSS: &str = include_str!("../assets/style.css");
/// The results page's live updates (server-sent events).
pub const RESULTS_JS: &str = include_str!("../assets/results.js");

/// `GET /static/{file}`.
pub async fn serve(Path(file): Path<String>) -> Response {
    let (content_type, body) = match file.as_str() {
        "style.css" => ("text/css; charset=utf-8", STYLE_CSS),
        "results.js" => ("text/javascript; charset=utf-8", RESULTS_JS),
        _ => return (StatusCode::NOT_FOUND, "no such file").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}
