//! The `voter_id` cookie: a random id the gateway gives a browser on its
//! first visit (HttpOnly, SameSite=Lax, one year), as the original app did.

use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use votemesh::ballot::check_voter_id;

/// The cookie's name.
pub const VOTER_COOKIE: &str = "voter_id";
/// How long the cookie lasts.
const COOKIE_DAYS: i64 = 365;

/// The browser's voter id, and the jar to send back (with a new cookie if
/// the browser had none, or one the vote service would refuse, such as a
/// hand-edited one: better a new voter than a browser that cannot vote).
pub fn voter_id(jar: CookieJar) -> (CookieJar, String) {
    if let Some(existing) = jar
        .get(VOTER_COOKIE)
        .map(|cookie| cookie.value().to_owned())
        && check_voter_id(&existing).is_ok()
    {
        return (jar, existing);
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let cookie = Cookie::build((VOTER_COOKIE, id.clone()))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .max_age(cookie::time::Duration::days(COOKIE_DAYS))
        .build();
    (jar.add(cookie), id)
}
