//! Who may use the bridge. Every route but `/health` answers only to the bridge's own
//! names (`host`: against DNS rebinding); upgrades and state-changing requests only from
//! allowed origins (against cross-site pages driving a shell); and everything but the
//! page, the probes and the login needs a credential: the bearer token, the cookie that
//! `POST /api/login` sets, or (for an upgrade) a single-use ticket (`tickets`). Wrong
//! credentials are counted per client address and lock it out for a while (`failures`).
//!
//! Authentication is on by default, on loopback too: loopback is not an identity, since
//! every local user (and every web page, through a rebinding name) can reach it. With no
//! token configured, `token` generates one and keeps it in a private file.

pub mod failures;
pub mod host;
pub mod shares;
pub mod tickets;
pub mod token;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use tokio::time::Instant;

use self::failures::Failures;
use self::host::{own_hosts, HostPolicy, PublicUrl};
use self::shares::Shares;
use self::tickets::{Grant, Tickets};
use self::token::Secret;
use crate::config::{AuthMode, Config};
use crate::error::AppError;
use crate::routes::{lookup, parse_id};
use crate::server::ConnMark;
use crate::AppState;

/// The cookie `POST /api/login` sets.
pub const COOKIE: &str = "ptyd_bridge_token";

/// Paths served without a credential: the probes and the login. `/health` skips the host
/// check too: it says nothing but "ok", and probes address pods by IP.
const OPEN_PATHS: [&str; 3] = ["/health", "/readyz", "/api/login"];

/// The whole policy.
#[derive(Debug)]
pub struct Auth {
    origins: Vec<String>,
    hosts: HostPolicy,
    public: PublicUrl,
    mode: AuthMode,
    tickets: Tickets,
    shares: Shares,
    failures: Failures,
}

/// A request made with a share token: what it may reach.
#[derive(Debug, Clone)]
pub struct ShareScope {
    /// The share token.
    pub token: String,
    /// The one terminal it opens.
    pub terminal: ipc_proto::SessionId,
}

/// Lowercase, without a trailing slash: the form browsers send.
fn normalize(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// What a request presented, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presented {
    /// A valid token, cookie or ticket.
    Valid,
    /// Only wrong ones.
    Wrong,
    /// None at all.
    Nothing,
}

impl Auth {
    /// The policy of a bridge configured by `config` and bound to `listen`.
    pub fn new(config: &Config, listen: SocketAddr) -> Auth {
        let public = config.public_url.clone().unwrap_or_else(|| PublicUrl::for_listen(listen));
        let hosts = HostPolicy::new(listen, &config.allowed_hosts, config.public_url.as_ref());
        let port = listen.port();
        let mut origins = Vec::new();
        for host in own_hosts(listen) {
            origins.push(format!("http://{host}:{port}"));
            // Browsers leave the default port out of the Origin header.
            if port == 80 {
                origins.push(format!("http://{host}"));
            }
        }
        origins.extend(config.public_url.as_ref().map(PublicUrl::origin));
        origins.extend(config.allowed_origins.iter().map(|o| normalize(o)));
        Auth {
            origins,
            hosts,
            public,
            mode: config.auth.clone(),
            tickets: Tickets::new(config.ticket_ttl),
            shares: Shares::default(),
            failures: Failures::new(config.auth_failure_limit, config.auth_failure_window),
        }
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

    /// Where browsers reach the bridge: the base of every `ws_url`.
    pub fn public_url(&self) -> &PublicUrl {
        &self.public
    }

    /// Whether a credential is required.
    pub fn required(&self) -> bool {
        matches!(self.mode, AuthMode::Token(_))
    }

    /// The WebSocket tickets.
    pub fn tickets(&self) -> &Tickets {
        &self.tickets
    }

    /// The share links.
    pub fn shares(&self) -> &Shares {
        &self.shares
    }

    fn token(&self) -> Option<&Secret> {
        match &self.mode {
            AuthMode::Token(t) => Some(t),
            AuthMode::Disabled => None,
        }
    }

    /// Checks the bearer header and the cookie, and for an upgrade of `terminal` the
    /// `?ticket=` (using it up).
    fn check(
        &self,
        headers: &HeaderMap,
        ticket: Option<(&str, ipc_proto::SessionId)>,
    ) -> (Presented, Option<Grant>) {
        let Some(token) = self.token() else { return (Presented::Valid, None) };
        let mut presented = Presented::Nothing;
        let mut grant = None;
        let mut note = |ok: bool| {
            if ok {
                presented = Presented::Valid;
            } else if presented == Presented::Nothing {
                presented = Presented::Wrong;
            }
        };
        for value in headers.get_all(header::AUTHORIZATION).iter() {
            let text = value.to_str().unwrap_or_default();
            note(text.strip_prefix("Bearer ").is_some_and(|t| token.matches(t.trim())));
        }
        let cookie = cookie_value(token);
        for value in cookie_values(headers, COOKIE) {
            note(bool::from(subtle::ConstantTimeEq::ct_eq(value.as_bytes(), cookie.as_bytes())));
        }
        if let Some((ticket, terminal)) = ticket {
            grant = self.tickets.redeem(ticket, terminal, Instant::now());
            note(grant.is_some());
        }
        (presented, grant)
    }

    /// The scope of a request made with `Authorization: Share <token>`, or why it is
    /// refused: a share token reads its terminal's entry and mints its tickets, nothing else.
    fn share_scope(&self, req: &Request) -> Option<Result<ShareScope, AppError>> {
        let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
        let token = value.strip_prefix("Share ")?.trim();
        let Some(terminal) = self.shares.terminal(token) else {
            return Some(Err(AppError::Unauthorized(
                "this share link was revoked, or never existed".into(),
            )));
        };
        let path = req.uri().path();
        let entry = format!("/api/terminals/{terminal}");
        let reach = (*req.method() == Method::GET && path == entry)
            || (*req.method() == Method::POST && path == format!("{entry}/ticket"));
        Some(if reach {
            Ok(ShareScope { token: token.to_string(), terminal })
        } else {
            Err(AppError::Forbidden(format!(
                "a share link opens only terminal {terminal}, to watch it; it cannot reach {path}"
            )))
        })
    }
}

/// The cookie holds the token hex-encoded, since a token may contain `;`, `,` or spaces.
fn cookie_value(token: &Secret) -> String {
    token.expose().bytes().map(|b| format!("{b:02x}")).collect()
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

/// The client's address (unspecified when the server did not record one, as in unit tests).
fn client_addr(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(a)| a.ip())
}

/// The `Host` a request names (HTTP/1.1 `Host`, else the URI's authority).
fn request_host(req: &Request) -> Option<String> {
    let header = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    header.map(str::to_string).or_else(|| req.uri().authority().map(|a| a.to_string()))
}

/// `?ticket=` of an upgrade of `/ws/terminal/{id}`, with the terminal it is for.
fn upgrade_ticket(req: &Request) -> Option<(String, ipc_proto::SessionId)> {
    let id = req.uri().path().strip_prefix("/ws/terminal/")?.parse().ok()?;
    let Query(query) = Query::<TicketQuery>::try_from_uri(req.uri()).ok()?;
    Some((query.ticket?, id))
}

#[derive(Deserialize)]
struct TicketQuery {
    ticket: Option<String>,
}

/// Middleware: 421 for a foreign `Host`, 403 for a foreign `Origin`, 401 without a
/// credential, 429 while the client is locked out after wrong ones.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let auth = &state.auth;
    let path = req.uri().path().to_string();
    if path == "/health" {
        return next.run(req).await;
    }
    let host = request_host(&req).unwrap_or_default();
    if !auth.hosts.allows(&host) {
        tracing::warn!(host = %host, %path, "refused a request for a foreign host");
        return AppError::MisdirectedHost(format!(
            "host {host:?} is not one of this bridge's names ({}); add it with --allowed-host \
             or --public-url",
            auth.hosts.names().join(", ")
        ))
        .into_response();
    }
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
    if !auth.required() || is_open(&path) {
        return next.run(req).await;
    }
    let addr = client_addr(&req);
    if let Some(wait) = auth.failures.locked(addr, Instant::now()) {
        return locked_out(addr, wait).into_response();
    }
    if let Some(scope) = auth.share_scope(&req) {
        return match scope {
            Ok(scope) => {
                let mut req = req;
                req.extensions_mut().insert(scope);
                next.run(req).await
            }
            Err(e) => {
                tracing::warn!(%path, client = %addr, "refused a share link: {e}");
                e.into_response()
            }
        };
    }
    let ticket = if is_upgrade { upgrade_ticket(&req) } else { None };
    let ticket = ticket.as_ref().map(|(t, id)| (t.as_str(), *id));
    let (presented, grant) = auth.check(req.headers(), ticket);
    match presented {
        Presented::Valid => {
            if let Some(mark) = req.extensions().get::<ConnMark>() {
                mark.authenticated();
            }
            let mut req = req;
            if let Some(grant) = grant {
                req.extensions_mut().insert(grant);
            }
            next.run(req).await
        }
        Presented::Wrong => {
            tracing::warn!(%path, client = %addr, "refused a request with a wrong credential");
            if let Some(wait) = auth.failures.record(addr, Instant::now()) {
                return locked_out(addr, wait).into_response();
            }
            unauthorized("wrong token, cookie or ticket").into_response()
        }
        Presented::Nothing => {
            tracing::debug!(%path, "refused a request without a credential");
            unauthorized("this bridge requires authentication").into_response()
        }
    }
}

fn unauthorized(what: &str) -> AppError {
    AppError::Unauthorized(format!(
        "{what}: open the login URL ptyd-bridge printed at start (or read the token from its \
         token file), then send Authorization: Bearer <token>, log in with POST /api/login, \
         or open WebSockets with a ticket from POST /api/terminals/{{id}}/ticket"
    ))
}

fn locked_out(addr: IpAddr, wait: std::time::Duration) -> AppError {
    tracing::warn!(client = %addr, ?wait, "locked out after repeated wrong credentials");
    AppError::TooManyAttempts {
        message: format!(
            "too many wrong credentials from {addr}; try again in {} s",
            wait.as_secs().max(1)
        ),
        retry_after: wait,
    }
}

/// Paths served without a credential: probes, the login, and the page itself (static
/// files with no secrets; the page logs in before it calls the API).
fn is_open(path: &str) -> bool {
    OPEN_PATHS.contains(&path)
        || path == "/"
        || path == "/favicon.ico"
        || path.starts_with("/t/")
        || path.starts_with("/assets/")
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

/// `POST /api/login {"token": T}`: sets an HttpOnly, SameSite=Strict cookie for browsers.
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Response, AppError> {
    let login: Login = serde_json::from_slice(&body)
        .map_err(|e| AppError::BadRequest(format!("expected {{\"token\": \"...\"}}: {e}")))?;
    let auth = &state.auth;
    let Some(token) = auth.token() else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let now = Instant::now();
    if let Some(wait) = auth.failures.locked(peer.ip(), now) {
        return Err(locked_out(peer.ip(), wait));
    }
    if !token.matches(&login.token) {
        tracing::warn!(client = %peer.ip(), "refused a login with a wrong token");
        if let Some(wait) = auth.failures.record(peer.ip(), now) {
            return Err(locked_out(peer.ip(), wait));
        }
        return Err(AppError::Unauthorized("wrong token".into()));
    }
    let secure = if auth.public.secure() { "; Secure" } else { "" };
    let cookie =
        format!("{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/{secure}", cookie_value(token));
    let mut response = StatusCode::NO_CONTENT.into_response();
    let value = HeaderValue::from_str(&cookie).map_err(|e| AppError::Internal(e.to_string()))?;
    response.headers_mut().insert(header::SET_COOKIE, value);
    Ok(response)
}

/// `POST /api/terminals/{id}/ticket`: a single-use ticket to open the terminal's socket
/// (read-only when asked through a share link).
pub async fn ticket(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    share: Option<axum::Extension<ShareScope>>,
) -> Result<(StatusCode, Json<serde_json::Value>), AppError> {
    let id = parse_id(&raw)?;
    lookup(&state, id)?;
    let tickets = state.auth.tickets();
    let grant = match share {
        Some(axum::Extension(scope)) => {
            Grant { role: crate::viewers::Role::ReadOnly, share: Some(scope.token) }
        }
        None => Grant { role: crate::viewers::Role::ReadWrite, share: None },
    };
    let ticket = tickets
        .mint_granting(id, Instant::now(), grant)
        .map_err(|e| AppError::Busy(e.to_string()))?;
    let ws_url = format!("{}/ws/terminal/{id}?ticket={ticket}", state.auth.public_url().ws_base());
    let body = serde_json::json!({
        "ticket": ticket,
        "expires_in_ms": tickets.ttl().as_millis() as u64,
        "ws_url": ws_url,
    });
    Ok((StatusCode::CREATED, Json(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(listen: &str, token: Option<&str>) -> Auth {
        let config = Config {
            allowed_origins: vec!["https://Term.Example.com/".into()],
            auth: match token {
                Some(t) => AuthMode::Token(Secret::new(t)),
                None => AuthMode::Disabled,
            },
            ..Config::default()
        };
        Auth::new(&config, listen.parse().unwrap())
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
    fn the_public_url_is_an_origin() {
        let config = Config {
            public_url: Some("https://term.example.org/x".parse().unwrap()),
            ..Config::default()
        };
        let a = Auth::new(&config, "127.0.0.1:3000".parse().unwrap());
        assert!(a.origin_allowed("https://term.example.org"));
        assert_eq!(a.public_url().ws_base(), "wss://term.example.org/x");
    }

    #[test]
    fn token_from_header_or_cookie() {
        let a = auth("127.0.0.1:1", Some("s3 cr;et"));
        let mut h = HeaderMap::new();
        assert_eq!(a.check(&h, None).0, Presented::Nothing);
        h.insert(header::AUTHORIZATION, "Bearer s3 cr;et".parse().unwrap());
        assert_eq!(a.check(&h, None).0, Presented::Valid);
        h.insert(header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert_eq!(a.check(&h, None).0, Presented::Wrong);
        let mut c = HeaderMap::new();
        let value = format!("other=1; {COOKIE}={}", cookie_value(&Secret::new("s3 cr;et")));
        c.insert(header::COOKIE, value.parse().unwrap());
        assert_eq!(a.check(&c, None).0, Presented::Valid);
        assert_eq!(auth("127.0.0.1:1", None).check(&HeaderMap::new(), None).0, Presented::Valid);
    }

    #[test]
    fn a_ticket_opens_one_upgrade() {
        let a = auth("127.0.0.1:1", Some("t"));
        let id = ipc_proto::SessionId::new();
        let ticket = a.tickets().mint(id, Instant::now()).unwrap();
        let h = HeaderMap::new();
        assert_eq!(a.check(&h, Some((&ticket, id))).0, Presented::Valid);
        assert_eq!(a.check(&h, Some((&ticket, id))).0, Presented::Wrong);
    }
}
