//! The HTML pages. They work without JavaScript (a vote is a plain form
//! post); the results page adds live updates from `/static/results.js`.
//! maud escapes every value, so option labels cannot inject markup.

use axum::{
    Form,
    extract::{Query, State, rejection::FormRejection},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::cookie::CookieJar;
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use crate::{AppState, error::HttpFailure, voter};

/// What `/` shows after a vote (from the redirect's query).
#[derive(Debug, Default, Deserialize)]
pub struct VotedQuery {
    /// The option id this browser voted for.
    pub voted: Option<String>,
    /// The vote service instance that took the vote.
    pub served_by: Option<String>,
}

/// The voting form's fields.
#[derive(Debug, Deserialize)]
pub struct VoteForm {
    /// The option id (the button pressed).
    pub vote: Option<String>,
}

/// `GET /`: the poll's options as buttons; after a vote, which one this
/// browser chose and which vote service took it.
pub async fn voting_page(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(voted): Query<VotedQuery>,
) -> Response {
    let (jar, _) = voter::voter_id(jar);
    let options = match state.upstream.options().await {
        Ok(options) => options,
        Err(status) => return (jar, error_page(HttpFailure::from(status))).into_response(),
    };
    let title = options
        .iter()
        .map(|option| option.label.as_str())
        .collect::<Vec<_>>()
        .join(" vs ");
    let chosen = voted
        .voted
        .as_deref()
        .and_then(|id| options.iter().find(|option| option.id == id));
    let body = html! {
        h1 { (title) "!" }
        p.lead { "One vote per browser. Vote again to change your mind." }
        form.choices method="post" action="/vote" {
            @for option in &options {
                @let is_chosen = chosen.is_some_and(|c| c.id == option.id);
                button.choice.chosen[is_chosen] type="submit" name="vote" value=(option.id) id={ "vote-" (option.id) } {
                    (option.label)
                    @if is_chosen { span.tick { " ✓" } }
                }
            }
        }
        @if let Some(option) = chosen {
            p.notice #confirmation {
                "You voted for " strong { (option.label) } "."
                @if let Some(served_by) = &voted.served_by {
                    " Vote taken by " code { (served_by) } "."
                }
            }
        }
        p { a.more href="/results" { "See the results, live →" } }
    };
    (jar, layout(&title, None, body)).into_response()
}

/// `POST /vote`: casts the form's vote, then 303 back to `/`.
pub async fn submit_vote(
    State(state): State<AppState>,
    jar: CookieJar,
    form: Result<Form<VoteForm>, FormRejection>,
) -> Response {
    let option = match form {
        Ok(Form(VoteForm { vote: Some(option) })) if !option.is_empty() => option,
        Ok(_) => {
            return error_page(HttpFailure::bad_request(
                "no option chosen: the form needs a `vote` field such as vote=a",
            ));
        }
        Err(rejection) => return error_page(rejection.into()),
    };
    let (jar, voter_id) = voter::voter_id(jar);
    match state.upstream.cast_vote(&voter_id, &option).await {
        Ok(accepted) => {
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("voted", &option)
                .append_pair("served_by", &accepted.served_by)
                .finish();
            (jar, Redirect::to(&format!("/?{query}"))).into_response()
        }
        Err(status) => (jar, error_page(status.into())).into_response(),
    }
}

/// How often the results page reloads itself in a browser without
/// JavaScript.
pub const NO_SCRIPT_REFRESH_SECONDS: u32 = 10;

/// `GET /results`: counts and percentages with bars, updated live.
pub async fn results_page(State(state): State<AppState>) -> Response {
    // Without a tally the page still loads (with the failure's status):
    // its live stream fills it in once the results are back.
    let (tally, failure) = match state.tally().await {
        Ok(tally) => (Some(tally), None),
        Err(failure) => (None, Some(failure)),
    };
    let body = html! {
        h1 { "Results" }
        @match &tally {
            Some(tally) => {
                @if tally.stale {
                    p.stale #stale { "The result service is not answering: these are the last results known, and they may be behind." }
                }
                p #total { (total_text(tally.total)) }
                ul.results #results {
                    @for option in &tally.options {
                        li data-option=(option.id) {
                            div.row {
                                span.label { (option.label) }
                                span.numbers {
                                    span.count { (option.count) } " · " span.percent { (format!("{:.1}", option.percent)) } "%"
                                }
                            }
                            progress max="100" value=(option.percent) { (option.percent) "%" }
                        }
                    }
                }
            }
            None => {
                p #total { "The results are not available right now; they will appear here when they are." }
                ul.results #results {}
            }
        }
        p.live #live aria-live="polite" { "Live updates need JavaScript: this page reloads every " (NO_SCRIPT_REFRESH_SECONDS) " seconds instead." }
        p { a.more href="/" { "← Vote" } }
        script src="/static/results.js" defer {}
    };
    let status = failure
        .as_ref()
        .map_or(StatusCode::OK, |failure| failure.status);
    let mut response = (
        status,
        layout("Results", Some(NO_SCRIPT_REFRESH_SECONDS), body),
    )
        .into_response();
    if let Some(failure) = &failure {
        failure.add_retry_after(&mut response);
    }
    response
}

/// Any other path.
pub async fn not_found() -> Response {
    error_page(HttpFailure::new(
        StatusCode::NOT_FOUND,
        "There is no page here.",
    ))
}

/// The total line of the results page (the script writes the same text).
pub fn total_text(total: i64) -> String {
    match total {
        0 => "No votes yet. Be the first!".to_owned(),
        1 => "1 vote".to_owned(),
        n => format!("{n} votes"),
    }
}

/// An error as a page, with its status (and Retry-After when it helps).
fn error_page(failure: HttpFailure) -> Response {
    let title = failure
        .status
        .canonical_reason()
        .unwrap_or("Something went wrong");
    let body = html! {
        h1 { (title) }
        p.error #error { (failure.message) }
        p { a.more href="/" { "← Back to the vote" } }
    };
    let mut response = (failure.status, layout(title, None, body)).into_response();
    failure.add_retry_after(&mut response);
    response
}

/// A page; with `refresh`, a browser without JavaScript reloads it every
/// that many seconds (a `<noscript>` refresh: with JavaScript on, the
/// live stream updates it instead).
fn layout(title: &str, refresh: Option<u32>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · votemesh" }
                @if let Some(seconds) = refresh {
                    noscript { meta http-equiv="refresh" content=(seconds); }
                }
                link rel="stylesheet" href="/static/style.css";
            }
            body {
                header.top {
                    a.brand href="/" { "votemesh" }
                    nav { a href="/" { "Vote" } a href="/results" { "Results" } }
                }
                main { (body) }
                footer { "votemesh · a gRPC service mesh in Rust" }
            }
        }
    }
}
