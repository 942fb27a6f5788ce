//! The bridge's settings: every timing and limit as a field, with the defaults in one place.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::host::PublicUrl;
use crate::auth::token::Secret;

/// Defaults, with units in their types.
pub mod defaults {
    use std::time::Duration;

    /// Where the HTTP server listens.
    pub const LISTEN: &str = "127.0.0.1:3000";
    /// A WebSocket Ping frame is sent this often.
    pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
    /// A Ping without a Pong for this long closes the socket.
    pub const PONG_TIMEOUT: Duration = Duration::from_secs(10);
    /// A Disconnected terminal is killed when no socket returns within this time.
    pub const GRACE: Duration = Duration::from_secs(10);
    /// A new terminal is killed when no socket claims it within this time.
    pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(30);
    /// A socket with no data in either direction for this long is closed.
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
    /// Output ptyd keeps per terminal for replay on reconnect.
    pub const REPLAY_BYTES: usize = 4096;
    /// The largest WebSocket message a browser may send.
    pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
    /// Flow control: output stops while more than this is unacknowledged by the client.
    pub const FLOW_HIGH: u64 = 256 * 1024;
    /// Flow control: output resumes once no more than this is unacknowledged.
    pub const FLOW_LOW: u64 = 128 * 1024;
    /// First delay before reconnecting to ptyd after losing it.
    pub const RECONNECT_INITIAL: Duration = Duration::from_millis(100);
    /// The reconnect delay doubles up to this.
    pub const RECONNECT_MAX: Duration = Duration::from_secs(5);
    /// How long an autostarted ptyd has to answer.
    pub const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(10);
    /// `Retry-After` of a 503 at capacity.
    pub const RETRY_AFTER: Duration = Duration::from_secs(5);
    /// How long a closing socket may take to flush its last frames and the close frame.
    pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
    /// How long shutdown waits for open sockets to close.
    pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
    /// Dead terminals remembered (for 410 answers), oldest forgotten first.
    pub const MAX_DEAD: usize = 1024;
    /// Name of the profile used when a request names none.
    pub const PROFILE: &str = "default";
    /// A socket's read buffer (the WebSocket library's default, 128 KiB zero-filled per
    /// socket, is most of a bridge's memory per terminal). Browser messages are small, and
    /// the library makes room for a longer one (a paste) once its header is read.
    pub const WS_READ_BUFFER: usize = 1024;
    /// Output is written to the socket once this much is buffered (each frame is flushed
    /// anyway, so this only bounds the buffer kept per socket).
    pub const WS_WRITE_BUFFER: usize = 8 * 1024;
    /// How long a WebSocket ticket stays valid.
    pub const TICKET_TTL: Duration = Duration::from_secs(30);
    /// A client that has not sent a whole request head within this is disconnected.
    pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    /// Open HTTP connections at most.
    pub const MAX_CONNECTIONS: usize = 1024;
    /// Connections that have not yet made an authenticated request, at most; past this the
    /// oldest of them is closed, so that they can never crowd out `/health` or a user.
    pub const MAX_ANONYMOUS_CONNECTIONS: usize = 256;
    /// Wrong credentials from one address before it is locked out...
    pub const AUTH_FAILURE_LIMIT: u32 = 10;
    /// ...for the rest of this window.
    pub const AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(60);
}

/// Whether requests need a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMode {
    /// Every API call and upgrade carries this token, its cookie or a ticket.
    Token(Secret),
    /// Anyone who reaches the port may run commands (`--no-auth`; loopback only).
    Disabled,
}

/// The label every terminal the bridge spawns carries, so a restarted bridge can find them.
pub const TERMINAL_LABEL: (&str, &str) = ("ptyd-bridge", "terminal");

/// The label holding the profile a terminal was started from.
pub const PROFILE_LABEL: &str = "ptyd-bridge.profile";

/// A program a browser may start: browsers name a profile, never a command.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Program name or path.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Working directory; ptyd's own when absent.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Variables set on top of ptyd's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl Profile {
    /// The user's login shell (`$SHELL`, else the passwd entry, else `/bin/sh`) started
    /// with `-l` in `$HOME`.
    pub fn login_shell() -> Profile {
        let user = nix::unistd::User::from_uid(nix::unistd::getuid()).ok().flatten();
        let shell = std::env::var("SHELL")
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| {
                let shell = user.as_ref()?.shell.to_str()?.to_string();
                (!shell.is_empty()).then_some(shell)
            })
            .unwrap_or_else(|| "/bin/sh".to_string());
        let home = std::env::var("HOME")
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| Some(user.as_ref()?.dir.to_str()?.to_string()));
        Profile { command: shell, args: vec!["-l".into()], cwd: home, env: BTreeMap::new() }
    }
}

/// How the bridge runs. Built by `main.rs` from flags, environment and the TOML file.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// ptyd's socket.
    pub socket: PathBuf,
    /// Ping frame period.
    pub heartbeat_interval: Duration,
    /// Ping → Pong deadline.
    pub pong_timeout: Duration,
    /// Reconnection grace of a Disconnected terminal.
    pub grace: Duration,
    /// How long a new terminal waits for its first socket.
    pub claim_timeout: Duration,
    /// No data in either direction for this long closes the socket.
    pub idle_timeout: Duration,
    /// Replay window asked of ptyd for each terminal.
    pub replay_bytes: usize,
    /// The largest message a browser may send.
    pub max_message_bytes: usize,
    /// Unacknowledged output at which a flow-controlled socket stops reading the terminal.
    pub flow_high: u64,
    /// Unacknowledged output at which it starts reading again.
    pub flow_low: u64,
    /// Origins allowed besides the bridge's own (`http://127.0.0.1:PORT` and friends).
    pub allowed_origins: Vec<String>,
    /// Whether and how requests authenticate.
    pub auth: AuthMode,
    /// Host names the bridge answers to besides its bind address and the loopback names.
    pub allowed_hosts: Vec<String>,
    /// Where browsers reach the bridge (behind a proxy); names the `ws_url`s.
    pub public_url: Option<PublicUrl>,
    /// Lifetime of a WebSocket ticket.
    pub ticket_ttl: Duration,
    /// Read buffer per socket.
    pub ws_read_buffer: usize,
    /// Write buffer per socket.
    pub ws_write_buffer: usize,
    /// Time a client has to send a whole request head.
    pub header_timeout: Duration,
    /// Open HTTP connections at most.
    pub max_connections: usize,
    /// Connections without an authenticated request at most (oldest closed first).
    pub max_anonymous_connections: usize,
    /// Wrong credentials per address and window before a lockout.
    pub auth_failure_limit: u32,
    /// The lockout window.
    pub auth_failure_window: Duration,
    /// Programs browsers may start, by name.
    pub profiles: BTreeMap<String, Profile>,
    /// The profile used when a request names none.
    pub default_profile: String,
    /// First reconnect delay after losing ptyd.
    pub reconnect_initial: Duration,
    /// Cap of the doubling reconnect delay.
    pub reconnect_max: Duration,
    /// `Retry-After` sent with 503 at capacity.
    pub retry_after: Duration,
    /// Time a closing socket gets to flush.
    pub close_timeout: Duration,
    /// Time shutdown waits for sockets to close.
    pub shutdown_timeout: Duration,
    /// Dead terminals remembered.
    pub max_dead: usize,
    /// How a terminal with several read-write viewers is sized.
    pub resize_policy: crate::viewers::ResizePolicy,
}

impl Default for Config {
    fn default() -> Self {
        let mut profiles = BTreeMap::new();
        profiles.insert(defaults::PROFILE.to_string(), Profile::login_shell());
        Config {
            listen: defaults::LISTEN.parse().expect("the default listen address is valid"),
            socket: ipc_proto::socket_path_from_env(),
            heartbeat_interval: defaults::HEARTBEAT_INTERVAL,
            pong_timeout: defaults::PONG_TIMEOUT,
            grace: defaults::GRACE,
            claim_timeout: defaults::CLAIM_TIMEOUT,
            idle_timeout: defaults::IDLE_TIMEOUT,
            replay_bytes: defaults::REPLAY_BYTES,
            max_message_bytes: defaults::MAX_MESSAGE_BYTES,
            flow_high: defaults::FLOW_HIGH,
            flow_low: defaults::FLOW_LOW,
            allowed_origins: Vec::new(),
            // A library user who configures nothing still gets a bridge that needs a secret.
            auth: AuthMode::Token(Secret::random()),
            allowed_hosts: Vec::new(),
            public_url: None,
            ticket_ttl: defaults::TICKET_TTL,
            ws_read_buffer: defaults::WS_READ_BUFFER,
            ws_write_buffer: defaults::WS_WRITE_BUFFER,
            header_timeout: defaults::HEADER_TIMEOUT,
            max_connections: defaults::MAX_CONNECTIONS,
            max_anonymous_connections: defaults::MAX_ANONYMOUS_CONNECTIONS,
            auth_failure_limit: defaults::AUTH_FAILURE_LIMIT,
            auth_failure_window: defaults::AUTH_FAILURE_WINDOW,
            profiles,
            default_profile: defaults::PROFILE.to_string(),
            reconnect_initial: defaults::RECONNECT_INITIAL,
            reconnect_max: defaults::RECONNECT_MAX,
            retry_after: defaults::RETRY_AFTER,
            close_timeout: defaults::CLOSE_TIMEOUT,
            shutdown_timeout: defaults::SHUTDOWN_TIMEOUT,
            max_dead: defaults::MAX_DEAD,
            resize_policy: crate::viewers::ResizePolicy::default(),
        }
    }
}

/// A configuration the bridge refuses to run with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Listening beyond loopback lets anyone on the network run shells as this user.
    #[error(
        "refusing to listen on {0} without authentication: anyone who can reach it could run \
         commands as this user; drop --no-auth (a token is then generated, or set \
         --token-file or PTYD_BRIDGE_TOKEN), or listen on a loopback address such as 127.0.0.1"
    )]
    NonLoopbackWithoutToken(SocketAddr),
    /// A limit that must be positive is zero.
    #[error("{0} must be at least 1")]
    ZeroLimit(&'static str),
    /// A buffer too small to read a frame header into.
    #[error("{0} must be at least {1} bytes")]
    TooSmall(&'static str, usize),
    /// A timing that must be positive is zero.
    #[error("{0} must be greater than zero")]
    ZeroDuration(&'static str),
    /// The default profile is not defined.
    #[error("the default profile {0:?} is not defined")]
    MissingDefaultProfile(String),
    /// An empty token would accept an empty header.
    #[error("the auth token is empty")]
    EmptyToken,
    /// Outside what ptyd accepts.
    #[error("replay-bytes must be between 1 and 16777216")]
    ReplayBytes,
    /// The watermarks must leave room between them.
    #[error("flow-low ({low}) must be below flow-high ({high})")]
    FlowWatermarks {
        /// The low watermark.
        low: u64,
        /// The high watermark.
        high: u64,
    },
}

impl Config {
    /// Checks the settings that would make the bridge unsafe or unable to work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.auth {
            AuthMode::Token(t) if t.is_empty() => return Err(ConfigError::EmptyToken),
            AuthMode::Disabled if !self.listen.ip().is_loopback() => {
                return Err(ConfigError::NonLoopbackWithoutToken(self.listen))
            }
            _ => {}
        }
        if self.ws_read_buffer < 1024 {
            return Err(ConfigError::TooSmall("ws-read-buffer", 1024));
        }
        for (name, n) in [
            ("max-connections", self.max_connections),
            ("max-anonymous-connections", self.max_anonymous_connections),
            ("auth-failure-limit", self.auth_failure_limit as usize),
        ] {
            if n == 0 {
                return Err(ConfigError::ZeroLimit(name));
            }
        }
        for (name, d) in [
            ("heartbeat-interval", self.heartbeat_interval),
            ("pong-timeout", self.pong_timeout),
            ("grace", self.grace),
            ("claim-timeout", self.claim_timeout),
            ("idle-timeout", self.idle_timeout),
            ("reconnect-initial", self.reconnect_initial),
            ("reconnect-max", self.reconnect_max),
            ("ticket-ttl", self.ticket_ttl),
            ("header-timeout", self.header_timeout),
            ("auth-failure-window", self.auth_failure_window),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        if !(1..=16 * 1024 * 1024).contains(&self.replay_bytes) {
            return Err(ConfigError::ReplayBytes);
        }
        if self.flow_low >= self.flow_high {
            return Err(ConfigError::FlowWatermarks { low: self.flow_low, high: self.flow_high });
        }
        if !self.profiles.contains_key(&self.default_profile) {
            return Err(ConfigError::MissingDefaultProfile(self.default_profile.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_spec_values() {
        let c = Config::default();
        assert_eq!(c.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(c.pong_timeout, Duration::from_secs(10));
        assert_eq!(c.grace, Duration::from_secs(10));
        assert_eq!(c.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.replay_bytes, 4096);
        assert_eq!(c.listen.to_string(), "127.0.0.1:3000");
        assert_eq!(c.profiles["default"].args, vec!["-l".to_string()]);
        c.validate().unwrap();
    }

    #[test]
    fn authentication_is_on_by_default_and_only_loopback_may_turn_it_off() {
        assert!(matches!(Config::default().auth, AuthMode::Token(_)));
        let mut c = Config {
            listen: "0.0.0.0:0".parse().unwrap(),
            auth: AuthMode::Disabled,
            ..Config::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::NonLoopbackWithoutToken(_))));
        c.auth = AuthMode::Token(Secret::new("s3cret"));
        c.validate().unwrap();
        c.auth = AuthMode::Token(Secret::new(""));
        assert_eq!(c.validate(), Err(ConfigError::EmptyToken));
        let v6 = Config {
            listen: "[::1]:0".parse().unwrap(),
            auth: AuthMode::Disabled,
            ..Config::default()
        };
        v6.validate().unwrap();
    }

    #[test]
    fn zero_timings_are_refused() {
        let c = Config { grace: Duration::ZERO, ..Config::default() };
        assert_eq!(c.validate(), Err(ConfigError::ZeroDuration("grace")));
    }
}
