//! The web terminal page, embedded in the binary from `client-js/dist/page` at build time
//! (release builds carry the files; debug builds read them from that directory). When
//! the page was not built, `/` says how to build it instead of failing obscurely.
//!
//! Every file has an ETag (its SHA-256, from the embedding) and `Cache-Control: no-cache`:
//! a browser revalidates each load and gets `304 Not Modified` while the file is the same,
//! so a new bridge's page is never served stale. `router()` compresses them (gzip, br).

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use rust_embed::{Embed, EmbeddedFile};

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
pub async fn index(headers: HeaderMap) -> Response {
    match Page::get("index.html") {
        Some(file) => serve(&headers, file, "text/html; charset=utf-8"),
        None => (StatusCode::SERVICE_UNAVAILABLE, Html(NOT_BUILT)).into_response(),
    }
}

/// `/assets/{file}`: the page's scripts and styles.
pub async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match Page::get(&file) {
        Some(f) => {
            let mime = f.metadata.mimetype().to_string();
            serve(&headers, f, &mime)
        }
        None => (StatusCode::NOT_FOUND, format!("no asset {file}")).into_response(),
    }
}

/// `file`, or 304 when the request's `If-None-Match` names its ETag already.
fn serve(request: &HeaderMap, file: EmbeddedFile, mime: &str) -> Response {
    let etag = etag(&file);
    let cached = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"));
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    if cached {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    if let Ok(value) = HeaderValue::from_str(mime) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    (headers, file.data.into_owned()).into_response()
}

/// A strong ETag: the file's SHA-256 (the first 16 bytes, in hex).
fn etag(file: &EmbeddedFile) -> String {
    let hash = file.metadata.sha256_hash();
    let hex: String = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}
