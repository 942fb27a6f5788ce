//! The bridge's settings: every timing and limit as a field, with the defaults in one place.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

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
    pub const FLOW_LOW: u64 = 32 * 1024;
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
    /// Bearer token every API call and upgrade must carry; none on loopback-only setups.
    pub token: Option<String>,
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
            token: None,
            profiles,
            default_profile: defaults::PROFILE.to_string(),
            reconnect_initial: defaults::RECONNECT_INITIAL,
            reconnect_max: defaults::RECONNECT_MAX,
            retry_after: defaults::RETRY_AFTER,
            close_timeout: defaults::CLOSE_TIMEOUT,
            shutdown_timeout: defaults::SHUTDOWN_TIMEOUT,
            max_dead: defaults::MAX_DEAD,
        }
    }
}

/// A configuration the bridge refuses to run with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Listening beyond loopback lets anyone on the network run shells as this user.
    #[error(
        "refusing to listen on {0} without an auth token: anyone who can reach it could run \
         commands as this user; set --token, PTYD_BRIDGE_TOKEN or --token-file, or listen on \
         a loopback address such as 127.0.0.1"
    )]
    NonLoopbackWithoutToken(SocketAddr),
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
        if self.token.as_deref() == Some("") {
            return Err(ConfigError::EmptyToken);
        }
        if !self.listen.ip().is_loopback() && self.token.is_none() {
            return Err(ConfigError::NonLoopbackWithoutToken(self.listen));
        }
        for (name, d) in [
            ("heartbeat-interval", self.heartbeat_interval),
            ("pong-timeout", self.pong_timeout),
            ("grace", self.grace),
            ("claim-timeout", self.claim_timeout),
            ("idle-timeout", self.idle_timeout),
            ("reconnect-initial", self.reconnect_initial),
            ("reconnect-max", self.reconnect_max),
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
    fn non_loopback_needs_a_token() {
        let mut c = Config { listen: "0.0.0.0:0".parse().unwrap(), ..Config::default() };
        assert!(matches!(c.validate(), Err(ConfigError::NonLoopbackWithoutToken(_))));
        c.token = Some("s3cret".into());
        c.validate().unwrap();
        c.token = Some(String::new());
        assert_eq!(c.validate(), Err(ConfigError::EmptyToken));
        let v6 = Config { listen: "[::1]:0".parse().unwrap(), ..Config::default() };
        v6.validate().unwrap();
    }

    #[test]
    fn zero_timings_are_refused() {
        let c = Config { grace: Duration::ZERO, ..Config::default() };
        assert_eq!(c.validate(), Err(ConfigError::ZeroDuration("grace")));
    }
}
