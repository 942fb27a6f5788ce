//! The HTTP surface: the router, the terminal API, health, readiness and metrics.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use ipc_proto::{SessionId, SpawnRequest};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::{PROFILE_LABEL, TERMINAL_LABEL};
use crate::error::AppError;
use crate::terminals::{
    now_ms, spawn_grace_timer, Ending, Missing, NewTerminal, Status, StopReason,
};
use crate::{assets, auth, ws, AppState};

/// How long `/readyz` waits for ptyd to answer.
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Every route, behind the origin and token guard.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/login", post(auth::login))
        .route("/api/terminals", post(create).get(list))
        .route("/api/terminals/{id}", get(show).delete(delete))
        .route("/api/terminals/{id}/ticket", post(auth::ticket))
        .route("/api/terminals/{id}/detach", post(detach))
        .route("/api/terminals/{id}/share", post(share).delete(unshare))
        .route("/ws/terminal/{id}", get(ws::upgrade))
        .merge(page_routes())
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(state.clone(), auth::guard))
        .layer(cors(&state.config.allowed_origins))
        .with_state(state)
}

/// The web page's files, compressed when the browser accepts it (the script is ~350 KB).
fn page_routes() -> Router<AppState> {
    Router::new()
        .route("/", get(assets::index))
        .route("/t/{id}", get(assets::index))
        .route("/assets/{file}", get(assets::asset))
        .layer(CompressionLayer::new())
}

/// CORS for the configured extra origins (pages that embed a terminal): preflights are
/// answered, and credentials (the cookie, `Authorization`) may be sent, which is why the
/// origins are listed one by one and never `*`.
fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim().trim_end_matches('/')).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .allow_credentials(true)
        .max_age(Duration::from_secs(600))
}

/// Parses a terminal id from the path; 400 when it is not a UUID.
pub fn parse_id(raw: &str) -> Result<SessionId, AppError> {
    raw.parse().map_err(|e| AppError::BadRequest(format!("invalid terminal id {raw:?}: {e}")))
}

/// The status of a usable terminal; 404 when unknown, 410 when Dead.
pub fn lookup(state: &AppState, id: SessionId) -> Result<Status, AppError> {
    match state.registry.check(id) {
        Ok(status) => Ok(status),
        Err(Missing::NotFound) => Err(AppError::NotFound(format!("no terminal {id}"))),
        Err(Missing::Dead(end_reason)) => Err(gone(id, end_reason)),
    }
}

/// 410 for a Dead terminal, saying why when the bridge knows.
pub fn gone(id: SessionId, end_reason: Option<Ending>) -> AppError {
    let why = end_reason.map(|e| format!(" ({e})")).unwrap_or_default();
    AppError::Gone {
        message: format!("terminal {id} is dead{why}; create a new terminal"),
        end_reason,
    }
}

async fn fallback() -> AppError {
    AppError::NotFound("no such route".into())
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, AppError> {
    state
        .daemon
        .probe(READY_PROBE_TIMEOUT)
        .await
        .map_err(|e| AppError::from_client(e, state.config.retry_after))?;
    Ok(Json(serde_json::json!({
        "status": "ready",
        "socket": state.daemon.socket().display().to_string(),
    })))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics.render(state.registry.counts());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    cols: Option<u16>,
    rows: Option<u16>,
    profile: Option<String>,
}

#[derive(Debug, Serialize)]
struct Created {
    id: SessionId,
    ws_url: String,
    pid: u32,
    status: Status,
    profile: String,
}

/// `POST /api/terminals`: starts a profile's program in a new ptyd session.
async fn create(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Created>), AppError> {
    let req: CreateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CreateRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| AppError::BadRequest(format!("invalid request body: {e}")))?
    };
    let config = &state.config;
    let name = req.profile.unwrap_or_else(|| config.default_profile.clone());
    let profile = config.profiles.get(&name).ok_or_else(|| {
        let known: Vec<&str> = config.profiles.keys().map(String::as_str).collect();
        AppError::BadRequest(format!("unknown profile {name:?} (available: {})", known.join(", ")))
    })?;
    let (cols, rows) = (req.cols.unwrap_or(80), req.rows.unwrap_or(24));
    if cols == 0 || rows == 0 {
        return Err(AppError::BadRequest(format!(
            "invalid size {cols}x{rows}: both must be at least 1"
        )));
    }
    let client = state.daemon.control().map_err(|e| {
        let e = AppError::from_client(e, config.retry_after);
        state.metrics.create_failed(&e);
        e
    })?;
    let labels = BTreeMap::from([
        (TERMINAL_LABEL.0.to_string(), TERMINAL_LABEL.1.to_string()),
        (PROFILE_LABEL.to_string(), name.clone()),
    ]);
    let request = SpawnRequest {
        env: profile.env.clone(),
        cwd: profile.cwd.clone(),
        cols,
        rows,
        labels,
        // The bridge governs idleness (socket idle timeout, then the grace).
        idle_timeout_ms: Some(0),
        replay_bytes: Some(config.replay_bytes),
        // A person's terminal: it may use the slots ptyd reserves for interactive sessions.
        interactive: true,
        ..SpawnRequest::new(&profile.command, &profile.args)
    };
    let reply = client.spawn(request).await.map_err(|e| {
        let e = AppError::from_client(e, config.retry_after);
        tracing::warn!(profile = %name, "cannot create a terminal: {e}");
        state.metrics.create_failed(&e);
        e
    })?;
    let id = reply.session;
    let terminal =
        NewTerminal { id, pid: reply.pid, profile: Some(name.clone()), created_at_ms: now_ms() };
    let timer = state.registry.insert_new(terminal, Instant::now());
    spawn_grace_timer(state.registry.clone(), state.daemon.clone(), state.metrics.clone(), timer);
    tracing::info_span!("terminal", terminal = %id).in_scope(|| {
        tracing::info!(pid = reply.pid, profile = %name, "Created terminal {id}");
    });
    // From configuration, never from the request's Host: a rebinding page controls that.
    let ws_url = format!("{}/ws/terminal/{id}", state.auth.public_url().ws_base());
    let created =
        Created { id, ws_url, pid: reply.pid, status: Status::Disconnected, profile: name };
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /api/terminals`: every terminal, Dead ones included while remembered.
async fn list(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "terminals": state.registry.list() }))
}

/// `GET /api/terminals/{id}`.
async fn show(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, AppError> {
    let id = parse_id(&raw)?;
    lookup(&state, id)?;
    let info =
        state.registry.get(id).ok_or_else(|| AppError::NotFound(format!("no terminal {id}")))?;
    Ok(Json(info).into_response())
}

/// `POST /api/terminals/{id}/detach`: keeps the terminal without a socket and without a
/// grace period (its socket, if one is open, closes with 4003); it runs until ptyd's idle
/// timeout or a `DELETE`, and any socket reopens it.
async fn detach(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, AppError> {
    let id = parse_id(&raw)?;
    lookup(&state, id)?;
    match state.registry.detach(id, Instant::now()) {
        Ok(previous) if previous != Status::Detached => {
            let span = tracing::info_span!("terminal", terminal = %id);
            span.in_scope(|| {
                tracing::info!("Terminal {id} detached: kept without a socket");
                tracing::debug!("Status transition: {previous} → Detached");
            });
        }
        Ok(_) => {}
        Err(Missing::NotFound) => return Err(AppError::NotFound(format!("no terminal {id}"))),
        Err(Missing::Dead(end_reason)) => return Err(gone(id, end_reason)),
    }
    let info =
        state.registry.get(id).ok_or_else(|| AppError::NotFound(format!("no terminal {id}")))?;
    Ok(Json(info).into_response())
}

/// `POST /api/terminals/{id}/share`: a share link that opens the terminal read-only: its
/// token may only mint read-only tickets for this terminal and read its entry.
async fn share(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<(axum::http::StatusCode, Json<serde_json::Value>), AppError> {
    let id = parse_id(&raw)?;
    lookup(&state, id)?;
    let token = state.auth.shares().mint(id).map_err(|e| AppError::Busy(e.to_string()))?;
    let base = state.auth.public_url().origin();
    let url = format!("{base}/t/{id}?role=read-only&share={token}");
    let span = tracing::info_span!("terminal", terminal = %id);
    span.in_scope(|| tracing::info!("Shared terminal {id} read-only"));
    let body = serde_json::json!({ "token": token, "url": url, "role": "read-only" });
    Ok((axum::http::StatusCode::CREATED, Json(body)))
}

/// `DELETE /api/terminals/{id}/share`: revokes every share link of the terminal and
/// closes the sockets opened through them (4005).
async fn unshare(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    let id = parse_id(&raw)?;
    lookup(&state, id)?;
    let revoked = state.auth.shares().revoke(id);
    let closed = state.registry.revoke_shares(id, &revoked);
    let span = tracing::info_span!("terminal", terminal = %id);
    span.in_scope(|| {
        tracing::info!(
            "Revoked {} share links of terminal {id}; closed {closed} sockets",
            revoked.len()
        )
    });
    Ok(Json(serde_json::json!({ "revoked": revoked.len(), "closed": closed })))
}

/// `DELETE /api/terminals/{id}`: kills the terminal's process group through ptyd; Dead.
async fn delete(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, AppError> {
    let id = parse_id(&raw)?;
    lookup(&state, id)?;
    let span = tracing::info_span!("terminal", terminal = %id);
    let deleted =
        state.registry.mark_dead(id, Ending::Deleted, Some(StopReason::Deleted), Instant::now());
    if let Some(previous) = deleted {
        span.in_scope(|| {
            tracing::info!("Killing PTY process for terminal {id} (deleted)");
            tracing::debug!("Status transition: {previous} → Dead");
        });
    }
    state.daemon.kill(id).await;
    let info =
        state.registry.get(id).ok_or_else(|| AppError::NotFound(format!("no terminal {id}")))?;
    Ok(Json(info).into_response())
}
