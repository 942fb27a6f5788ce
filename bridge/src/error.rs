//! `AppError`: every refusal of the HTTP API, as a status code and a JSON `{error, message}`.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ipc_proto::{ClientError, ErrorCode};

use crate::terminals::Ending;

/// An API failure. The variant name is the `error` field of the JSON body.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Malformed input: a bad id, bad JSON, an unknown profile. 400.
    #[error("{0}")]
    BadRequest(String),
    /// No or a wrong token. 401.
    #[error("{0}")]
    Unauthorized(String),
    /// A foreign `Origin`. 403.
    #[error("{0}")]
    Forbidden(String),
    /// A `Host` that is not one of the bridge's names (DNS rebinding). 421.
    #[error("{0}")]
    MisdirectedHost(String),
    /// Locked out after repeated wrong credentials. 429 with `Retry-After`.
    #[error("{message}")]
    TooManyAttempts {
        /// What happened and for how long.
        message: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// A bounded table is full (e.g. outstanding WebSocket tickets). 503.
    #[error("{0}")]
    Busy(String),
    /// No terminal with this id. 404.
    #[error("{0}")]
    NotFound(String),
    /// The terminal is Dead (for this reason, when known). 410.
    #[error("{message}")]
    Gone {
        /// What to tell the client.
        message: String,
        /// Why it is Dead: `end_reason` in the body.
        end_reason: Option<Ending>,
    },
    /// The pool is full; retry later. 503 with `Retry-After`.
    #[error("{message}")]
    AtCapacity {
        /// ptyd's text, e.g. "pty pool is at capacity (1)".
        message: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// A per-principal limit of ptyd refused the spawn. 429 with `Retry-After`.
    #[error("{message}")]
    QuotaExceeded {
        /// ptyd's text, e.g. "session quota reached: 4/4 for uid 1000".
        message: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// ptyd is unreachable or the connection broke. 503.
    #[error("{0}")]
    IpcError(String),
    /// ptyd could not start the profile's program. 500.
    #[error("{0}")]
    SpawnFailed(String),
    /// ptyd refuses new sessions while it stops. 503.
    #[error("{0}")]
    ShuttingDown(String),
    /// Anything else. 500.
    #[error("{0}")]
    Internal(String),
}

impl AppError {
    /// The `error` field: the variant's name.
    pub fn name(&self) -> &'static str {
        match self {
            AppError::BadRequest(_) => "BadRequest",
            AppError::Unauthorized(_) => "Unauthorized",
            AppError::Forbidden(_) => "Forbidden",
            AppError::MisdirectedHost(_) => "MisdirectedHost",
            AppError::TooManyAttempts { .. } => "TooManyAttempts",
            AppError::Busy(_) => "Busy",
            AppError::NotFound(_) => "NotFound",
            AppError::Gone { .. } => "Gone",
            AppError::AtCapacity { .. } => "AtCapacity",
            AppError::QuotaExceeded { .. } => "QuotaExceeded",
            AppError::IpcError(_) => "IpcError",
            AppError::SpawnFailed(_) => "SpawnFailed",
            AppError::ShuttingDown(_) => "ShuttingDown",
            AppError::Internal(_) => "Internal",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::MisdirectedHost(_) => StatusCode::MISDIRECTED_REQUEST,
            AppError::TooManyAttempts { .. } | AppError::QuotaExceeded { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            AppError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Gone { .. } => StatusCode::GONE,
            AppError::AtCapacity { .. } | AppError::IpcError(_) | AppError::ShuttingDown(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::SpawnFailed(_) | AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Maps a failed ptyd call. `retry_after` is used for `AtCapacity`.
    pub fn from_client(e: ClientError, retry_after: Duration) -> AppError {
        match e {
            ClientError::Ipc(_) => AppError::IpcError(e.to_string()),
            ClientError::Daemon { code, message } => match code {
                ErrorCode::AtCapacity => AppError::AtCapacity { message, retry_after },
                ErrorCode::QuotaExceeded => AppError::QuotaExceeded { message, retry_after },
                ErrorCode::SpawnFailed => AppError::SpawnFailed(message),
                ErrorCode::ShuttingDown => AppError::ShuttingDown(message),
                ErrorCode::HandleNotFound => AppError::NotFound(message),
                _ => AppError::Internal(format!("ptyd answered {code}: {message}")),
            },
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.name(), "message": self.to_string() });
        if let AppError::Gone { end_reason: Some(why), .. } = &self {
            body["end_reason"] = why.as_str().into();
        }
        let mut response = (self.status(), Json(body)).into_response();
        if let AppError::AtCapacity { retry_after, .. }
        | AppError::TooManyAttempts { retry_after, .. }
        | AppError::QuotaExceeded { retry_after, .. } = &self
        {
            // Whole seconds, rounded up, at least one: the header has no finer unit.
            let secs = retry_after.as_millis().div_ceil(1000).max(1);
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_503_with_retry_after_and_the_daemon_text() {
        let e = ClientError::Daemon {
            code: ErrorCode::AtCapacity,
            message: "pty pool is at capacity (1)".into(),
        };
        let r = AppError::from_client(e, Duration::from_millis(1500)).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
    }

    #[test]
    fn ipc_errors_keep_the_ipc_prefix() {
        let gone = ipc_proto::IpcError::Closed { stage: ipc_proto::ConnectionStage::Connected };
        let e = AppError::from_client(gone.into(), Duration::ZERO);
        assert_eq!(e.name(), "IpcError");
        assert_eq!(e.to_string(), "IPC error: ptyd closed the connection");
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
