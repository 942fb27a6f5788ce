//! The web terminal page, embedded in the binary from `client-js/dist/page` at build time
//! (release builds carry the files; debug builds read them from that directory). When
//! the page was not built, `/` says how to build it instead of failing obscurely.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use rust_embed::Embed;

#[derive(Embed)]
#[folder = "../client-js/dist/page"]
#[allow_missing = true]
struct Page;

const NOT_BUILT: &str = "<!doctype html><title>ptyd</title><h1>The web page was not built</h1>\
<p>Build it with <code>npm --prefix client-js ci &amp;&amp; npm --prefix client-js run build</code> \
and then ptyd-bridge (<code>bash scripts/run.sh</code> does both).</p>";

/// Whether the page was built into this binary.
pub fn available() -> bool {
    Page::get("index.html").is_some()
}

/// `/` and `/t/{id}`: the page; the script decides what to open.
pub async fn index() -> Response {
    match Page::get("index.html") {
        Some(file) => {
            ([(header::CACHE_CONTROL, "no-cache")], Html(file.data.into_owned())).into_response()
        }
        None => (StatusCode::SERVICE_UNAVAILABLE, Html(NOT_BUILT)).into_response(),
    }
}

/// `/assets/{file}`: the page's scripts and styles.
pub async fn asset(Path(file): Path<String>) -> Response {
    match Page::get(&file) {
        Some(f) => {
            let mime = f.metadata.mimetype().to_string();
            ([(header::CONTENT_TYPE, mime)], f.data.into_owned()).into_response()
        }
        None => (StatusCode::NOT_FOUND, format!("no asset {file}")).into_response(),
    }
}
