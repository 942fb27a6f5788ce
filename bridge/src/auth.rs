//! Who may use the bridge: the `Origin` allowlist for upgrades and state-changing requests
//! (against cross-site pages driving a local shell), and the optional bearer token (header,
//! cookie from `POST /api/login`, or `?token=` on the upgrade URL).
//!
//! The allowlist is built from the address the bridge is bound to, never from the request's
//! `Host` header: a DNS-rebinding page controls `Host` and `Origin` alike.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::AppError;
use crate::AppState;

/// The cookie `POST /api/login` sets.
pub const COOKIE: &str = "ptyd_bridge_token";

/// Paths anyone may call: liveness and readiness probes, and the login itself.
const OPEN_PATHS: [&str; 3] = ["/health", "/readyz", "/api/login"];

/// The origin and token policy.
#[derive(Debug, Clone)]
pub struct Auth {
    origins: Vec<String>,
    token: Option<String>,
}

/// Lowercase, without a trailing slash: the form browsers send.
fn normalize(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

fn host_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

impl Auth {
    /// The policy for a bridge bound to `listen`, allowing `extra` origins too.
    pub fn new(listen: SocketAddr, extra: &[String], token: Option<String>) -> Auth {
        let port = listen.port();
        let mut hosts = vec!["127.0.0.1".to_string(), "localhost".to_string(), "[::1]".to_string()];
        if !listen.ip().is_unspecified() && !listen.ip().is_loopback() {
            hosts.push(host_of(listen.ip()));
        }
        let mut origins = Vec::new();
        for host in hosts {
            origins.push(format!("http://{host}:{port}"));
            // Browsers leave the default port out of the Origin header.
            if port == 80 {
                origins.push(format!("http://{host}"));
            }
        }
        origins.extend(extra.iter().map(|o| normalize(o)));
        Auth { origins, token }
    }

    /// The allowed origins.
    pub fn origins(&self) -> &[String] {
        &self.origins
    }

    /// Whether a request with this `Origin` may go on.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        let origin = normalize(origin);
        self.origins.contains(&origin)
    }

    /// Whether a token is required.
    pub fn token_required(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `given` is the token.
    pub fn token_matches(&self, given: &str) -> bool {
        self.token.as_deref().is_some_and(|t| same_bytes(t.as_bytes(), given.as_bytes()))
    }

    /// Whether the request carries the token (header, cookie, or `?token=` on an upgrade).
    pub fn authorized(&self, headers: &HeaderMap, query_token: Option<&str>) -> bool {
        let Some(token) = self.token.as_deref() else { return true };
        let bearer = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix("Bearer "))
            .any(|t| same_bytes(t.trim().as_bytes(), token.as_bytes()));
        let cookie = cookie_values(headers, COOKIE)
            .any(|v| same_bytes(v.as_bytes(), cookie_value(token).as_bytes()));
        let query = query_token.is_some_and(|t| same_bytes(t.as_bytes(), token.as_bytes()));
        bearer || cookie || query
    }
}

/// Compares without stopping at the first difference, so timing tells nothing of the token.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The cookie holds the token hex-encoded, since a token may contain `;`, `,` or spaces.
fn cookie_value(token: &str) -> String {
    token.bytes().map(|b| format!("{b:02x}")).collect()
}

fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Middleware: refuses foreign origins (403) and missing or wrong tokens (401).
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let auth = &state.auth;
    let path = req.uri().path().to_string();
    let is_upgrade = path.starts_with("/ws/");
    let changes_state = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if is_upgrade || changes_state {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let text = String::from_utf8_lossy(origin.as_bytes()).into_owned();
            if !auth.origin_allowed(&text) {
                tracing::warn!(origin = %text, %path, "refused a request from a foreign origin");
                let msg = format!(
                    "origin {text} is not allowed; allowed: {} (add more with --allowed-origin)",
                    auth.origins().join(", ")
                );
                return AppError::Forbidden(msg).into_response();
            }
        }
    }
    if auth.token_required() && !is_open(&path) {
        let query: Option<String> = if is_upgrade {
            Query::<HashMap<String, String>>::try_from_uri(req.uri())
                .ok()
                .and_then(|Query(mut q)| q.remove("token"))
        } else {
            None
        };
        if !auth.authorized(req.headers(), query.as_deref()) {
            tracing::warn!(%path, "refused a request without a valid token");
            return AppError::Unauthorized(
                "missing or wrong token: send Authorization: Bearer <token>, log in with POST \
                 /api/login, or add ?token=<token> to the WebSocket URL"
                    .into(),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Paths served without the token: probes, the login, and the page itself (static files
/// with no secrets; the page logs in before it calls the API).
fn is_open(path: &str) -> bool {
    OPEN_PATHS.contains(&path)
        || path == "/"
        || path.starts_with("/t/")
        || path.starts_with("/assets/")
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

/// `POST /api/login {"token": T}`: sets an HttpOnly, SameSite=Strict cookie for browsers.
pub async fn login(State(state): State<AppState>, body: Bytes) -> Result<Response, AppError> {
    let login: Login = serde_json::from_slice(&body)
        .map_err(|e| AppError::BadRequest(format!("expected {{\"token\": \"...\"}}: {e}")))?;
    if !state.auth.token_required() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    if !state.auth.token_matches(&login.token) {
        tracing::warn!("refused a login with a wrong token");
        return Err(AppError::Unauthorized("wrong token".into()));
    }
    let cookie =
        format!("{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/", cookie_value(&login.token));
    let mut response = StatusCode::NO_CONTENT.into_response();
    let value = HeaderValue::from_str(&cookie).map_err(|e| AppError::Internal(e.to_string()))?;
    response.headers_mut().insert(header::SET_COOKIE, value);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(listen: &str, token: Option<&str>) -> Auth {
        Auth::new(
            listen.parse().unwrap(),
            &["https://Term.Example.com/".into()],
            token.map(Into::into),
        )
    }

    #[test]
    fn own_origin_and_localhost_variants_are_allowed() {
        let a = auth("127.0.0.1:3000", None);
        for ok in [
            "http://127.0.0.1:3000",
            "http://localhost:3000",
            "http://[::1]:3000",
            "HTTP://LOCALHOST:3000/",
            "https://term.example.com",
        ] {
            assert!(a.origin_allowed(ok), "{ok}");
        }
        for bad in [
            "http://evil.example",
            "http://localhost:3001",
            "https://localhost:3000",
            "http://localhost.evil.example:3000",
            "null",
            "",
        ] {
            assert!(!a.origin_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn a_specific_bind_address_is_its_own_origin() {
        let a = auth("192.0.2.7:8080", Some("t"));
        assert!(a.origin_allowed("http://192.0.2.7:8080"));
        assert!(!auth("0.0.0.0:8080", Some("t")).origin_allowed("http://0.0.0.0:8080"));
        assert!(auth("127.0.0.1:80", None).origin_allowed("http://localhost"));
    }

    #[test]
    fn token_from_header_cookie_or_query() {
        let a = auth("127.0.0.1:1", Some("s3 cr;et"));
        let mut h = HeaderMap::new();
        assert!(!a.authorized(&h, None));
        assert!(a.authorized(&h, Some("s3 cr;et")));
        assert!(!a.authorized(&h, Some("wrong")));
        h.insert(header::AUTHORIZATION, "Bearer s3 cr;et".parse().unwrap());
        assert!(a.authorized(&h, None));
        h.insert(header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert!(!a.authorized(&h, None));
        let mut c = HeaderMap::new();
        let value = format!("other=1; {COOKIE}={}", cookie_value("s3 cr;et"));
        c.insert(header::COOKIE, value.parse().unwrap());
        assert!(a.authorized(&c, None));
        assert!(auth("127.0.0.1:1", None).authorized(&HeaderMap::new(), None));
    }

    #[test]
    fn comparison_is_exact() {
        assert!(same_bytes(b"abc", b"abc"));
        assert!(!same_bytes(b"abc", b"abd"));
        assert!(!same_bytes(b"abc", b"abcd"));
    }
}
