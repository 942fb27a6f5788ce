//! ptyd-bridge: flags, environment and the TOML file into a `Config`; logging; ptyd
//! autostart; serving until SIGTERM or SIGINT.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use serde::Deserialize;
use tokio::signal::unix::{signal, SignalKind};

use ptyd_bridge::auth::host::PublicUrl;
use ptyd_bridge::auth::token::{self, Secret};
use ptyd_bridge::autostart::{ensure_daemon, Autostart};
use ptyd_bridge::config::{defaults, AuthMode, Config, Profile};

mod notify;

#[derive(Copy, Clone, Debug, ValueEnum, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum LogFormat {
    Text,
    Json,
}

/// Browser terminals over WebSocket, backed by ptyd sessions.
///
/// Every flag can also be set with its environment variable or in the [bridge] table of the
/// TOML file given with --config (the same file as ptyd's; its [daemon].socket is the
/// default socket). Flags win over the environment, which wins over the file. Durations are
/// human-readable: 200ms, 10s, 5m.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// Address to serve HTTP and WebSockets on [default: 127.0.0.1:3000]
    #[arg(long, env = "PTYD_BRIDGE_LISTEN")]
    listen: Option<SocketAddr>,
    /// ptyd's socket [default: [daemon].socket of the config file, else ptyd's default]
    #[arg(long, env = "PTYD_SOCKET")]
    socket: Option<PathBuf>,
    /// Interval between WebSocket Ping frames [default: 30s]
    #[arg(long, env = "PTYD_BRIDGE_HEARTBEAT_INTERVAL", value_parser = humantime::parse_duration)]
    heartbeat_interval: Option<Duration>,
    /// Close a socket whose Ping got no Pong within this [default: 10s]
    #[arg(long, env = "PTYD_BRIDGE_PONG_TIMEOUT", value_parser = humantime::parse_duration)]
    pong_timeout: Option<Duration>,
    /// Kill a Disconnected terminal when no socket returns within this [default: 10s]
    #[arg(long, env = "PTYD_BRIDGE_GRACE", value_parser = humantime::parse_duration)]
    grace: Option<Duration>,
    /// Kill a new terminal when no socket connects within this [default: 30s]
    #[arg(long, env = "PTYD_BRIDGE_CLAIM_TIMEOUT", value_parser = humantime::parse_duration)]
    claim_timeout: Option<Duration>,
    /// Close a socket with no data in either direction for this long [default: 5m]
    #[arg(long, env = "PTYD_BRIDGE_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    idle_timeout: Option<Duration>,
    /// Output ptyd keeps per terminal for replay on reconnect [default: 4096]
    #[arg(long, env = "PTYD_BRIDGE_REPLAY_BYTES")]
    replay_bytes: Option<usize>,
    /// Largest WebSocket message a browser may send; larger ones close with 1009 [default: 65536]
    #[arg(long, env = "PTYD_BRIDGE_MAX_MESSAGE_BYTES")]
    max_message_bytes: Option<usize>,
    /// Flow control: stop reading a terminal while this much output is unacknowledged by a
    /// client that sends `ack` [default: 262144]
    #[arg(long, env = "PTYD_BRIDGE_FLOW_HIGH")]
    flow_high: Option<u64>,
    /// Flow control: read again once no more than this is unacknowledged [default: 131072, or half of --flow-high when that is lower]
    #[arg(long, env = "PTYD_BRIDGE_FLOW_LOW")]
    flow_low: Option<u64>,
    /// The size a terminal with several read-write viewers takes from their windows:
    /// smallest (as tmux: everyone sees it all), largest, or latest (the last resized) [default: smallest]
    #[arg(long, env = "PTYD_BRIDGE_RESIZE_POLICY", value_enum)]
    resize_policy: Option<ptyd_bridge::viewers::ResizePolicy>,
    /// Also allow this Origin (repeatable; comma-separated in the environment)
    #[arg(long, env = "PTYD_BRIDGE_ALLOWED_ORIGIN", value_delimiter = ',')]
    allowed_origin: Vec<String>,
    /// The token every API call and upgrade must carry. On the command line every local
    /// user can read it (ps, /proc/PID/cmdline): prefer PTYD_BRIDGE_TOKEN or --token-file.
    /// With none configured, one is generated and kept in
    /// $XDG_RUNTIME_DIR/ptyd-bridge/token (mode 0600), and a login URL is printed
    #[arg(long, env = "PTYD_BRIDGE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Read the token from this file (surrounding whitespace ignored); under systemd,
    /// `LoadCredential=token:PATH` is read from $CREDENTIALS_DIRECTORY/token by itself
    #[arg(long, env = "PTYD_BRIDGE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Serve without authentication: any local user (and any page that reaches the port)
    /// can run commands as this user. Refused on non-loopback addresses
    #[arg(long, env = "PTYD_BRIDGE_NO_AUTH")]
    no_auth: bool,
    /// Also answer to this Host name, e.g. a proxy's (repeatable; comma-separated in the
    /// environment). Other Host headers get 421, against DNS rebinding
    #[arg(long, env = "PTYD_BRIDGE_ALLOWED_HOST", value_delimiter = ',')]
    allowed_host: Vec<String>,
    /// Where browsers reach the bridge, e.g. https://term.example.com behind a TLS proxy:
    /// names the ws_url (wss:// for https://) and is an allowed host and origin
    #[arg(long, env = "PTYD_BRIDGE_PUBLIC_URL")]
    public_url: Option<PublicUrl>,
    /// Read buffer per WebSocket, in bytes [default: 1024]
    #[arg(long, env = "PTYD_BRIDGE_WS_READ_BUFFER")]
    ws_read_buffer: Option<usize>,
    /// Write buffer per WebSocket, in bytes [default: 8192]
    #[arg(long, env = "PTYD_BRIDGE_WS_WRITE_BUFFER")]
    ws_write_buffer: Option<usize>,
    /// How long a WebSocket ticket is valid [default: 30s]
    #[arg(long, env = "PTYD_BRIDGE_TICKET_TTL", value_parser = humantime::parse_duration)]
    ticket_ttl: Option<Duration>,
    /// Close a connection that has not sent a whole request head within this [default: 10s]
    #[arg(long, env = "PTYD_BRIDGE_HEADER_TIMEOUT", value_parser = humantime::parse_duration)]
    header_timeout: Option<Duration>,
    /// Open HTTP connections at most [default: 1024]
    #[arg(long, env = "PTYD_BRIDGE_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Connections without an authenticated request at most; the oldest is closed to make
    /// room, so /health and logged-in users always get through [default: 256]
    #[arg(long, env = "PTYD_BRIDGE_MAX_ANONYMOUS_CONNECTIONS")]
    max_anonymous_connections: Option<usize>,
    /// Profile used when a request names none [default: default]
    #[arg(long, env = "PTYD_BRIDGE_DEFAULT_PROFILE")]
    default_profile: Option<String>,
    /// ptyd binary to start when none answers [default: next to this executable, else PATH]
    #[arg(long, env = "PTYD_BRIDGE_PTYD_BIN")]
    ptyd_bin: Option<PathBuf>,
    /// Never start ptyd; wait for one to appear
    #[arg(long, env = "PTYD_BRIDGE_NO_SPAWN_DAEMON")]
    no_spawn_daemon: bool,
    /// How long an autostarted ptyd has to answer [default: 10s]
    #[arg(long, env = "PTYD_BRIDGE_DAEMON_START_TIMEOUT", value_parser = humantime::parse_duration)]
    daemon_start_timeout: Option<Duration>,
    /// First delay before reconnecting to a lost ptyd; it doubles [default: 100ms]
    #[arg(long, env = "PTYD_BRIDGE_RECONNECT_INITIAL", value_parser = humantime::parse_duration)]
    reconnect_initial: Option<Duration>,
    /// Cap of the reconnect delay [default: 5s]
    #[arg(long, env = "PTYD_BRIDGE_RECONNECT_MAX", value_parser = humantime::parse_duration)]
    reconnect_max: Option<Duration>,
    /// Log format on stderr; the level comes from RUST_LOG (default info) [default: text]
    #[arg(long, env = "PTYD_BRIDGE_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// TOML file with a [bridge] table using these flags' names (grace = "10s")
    #[arg(long, env = "PTYD_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Deserialize, Default, Debug)]
struct FileConfig {
    #[serde(default)]
    daemon: DaemonTable,
    #[serde(default)]
    bridge: BridgeTable,
}

/// ptyd's table: only its socket matters here; the rest is ptyd's business.
#[derive(Deserialize, Default, Debug)]
struct DaemonTable {
    socket: Option<PathBuf>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct BridgeTable {
    listen: Option<SocketAddr>,
    socket: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    heartbeat_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pong_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    grace: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    claim_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    idle_timeout: Option<Duration>,
    replay_bytes: Option<usize>,
    max_message_bytes: Option<usize>,
    flow_high: Option<u64>,
    flow_low: Option<u64>,
    resize_policy: Option<ptyd_bridge::viewers::ResizePolicy>,
    #[serde(default, alias = "allowed_origins")]
    allowed_origin: Vec<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    #[serde(default)]
    no_auth: bool,
    #[serde(default, alias = "allowed_hosts")]
    allowed_host: Vec<String>,
    public_url: Option<String>,
    #[serde(default, with = "humantime_serde")]
    ticket_ttl: Option<Duration>,
    ws_read_buffer: Option<usize>,
    ws_write_buffer: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    header_timeout: Option<Duration>,
    max_connections: Option<usize>,
    max_anonymous_connections: Option<usize>,
    default_profile: Option<String>,
    ptyd_bin: Option<PathBuf>,
    #[serde(default)]
    no_spawn_daemon: bool,
    #[serde(default, with = "humantime_serde")]
    daemon_start_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    reconnect_initial: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    reconnect_max: Option<Duration>,
    log_format: Option<LogFormat>,
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
}

/// What main needs besides the lib's `Config`.
struct Startup {
    log_format: LogFormat,
    autostart: Option<Autostart>,
    credential: Credential,
}

/// Where the credential came from, to tell the operator (never the token itself, except
/// in the login URL of a generated one, on stdout).
#[derive(Debug, PartialEq, Eq)]
enum Credential {
    /// `--token` on the command line, visible to every user.
    Flag,
    /// `PTYD_BRIDGE_TOKEN`.
    Env,
    /// The `[bridge]` table's `token`.
    ConfigFile,
    /// A file: `--token-file`, the `[bridge]` table's `token_file`, or systemd's credential.
    File(PathBuf),
    /// Generated now or at an earlier start, kept in this file.
    Generated(PathBuf, token::Origin),
    /// `--no-auth`.
    Disabled,
}

fn load_file(path: &Option<PathBuf>) -> anyhow::Result<FileConfig> {
    let Some(path) = path else { return Ok(FileConfig::default()) };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

fn read_token(path: &std::path::Path) -> anyhow::Result<Secret> {
    token::read(path).with_context(|| format!("reading token file {}", path.display()))
}

/// The credential, from the first source that has one: `--no-auth`, `--token` or
/// `PTYD_BRIDGE_TOKEN`, `--token-file`, the file's `token` and `token_file`, systemd's
/// `$CREDENTIALS_DIRECTORY/token`, else the generated token file.
fn resolve_credential(
    args_token: Option<(String, bool)>,
    args_file: Option<PathBuf>,
    b: &BridgeTable,
    no_auth: bool,
) -> anyhow::Result<(AuthMode, Credential)> {
    let configured =
        args_token.is_some() || args_file.is_some() || b.token.is_some() || b.token_file.is_some();
    if no_auth {
        if configured {
            bail!("--no-auth conflicts with a configured token; choose one");
        }
        return Ok((AuthMode::Disabled, Credential::Disabled));
    }
    if let Some((t, from_flag)) = args_token {
        let source = if from_flag { Credential::Flag } else { Credential::Env };
        return Ok((AuthMode::Token(Secret::new(t)), source));
    }
    if let Some(path) = args_file.or_else(|| b.token_file.clone().filter(|_| b.token.is_none())) {
        return Ok((AuthMode::Token(read_token(&path)?), Credential::File(path)));
    }
    if let Some(t) = &b.token {
        return Ok((AuthMode::Token(Secret::new(t.clone())), Credential::ConfigFile));
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()) {
        let path = PathBuf::from(dir).join("token");
        if path.exists() {
            return Ok((AuthMode::Token(read_token(&path)?), Credential::File(path)));
        }
    }
    let path = token::default_token_path();
    let (secret, origin) = token::load_or_create(&path)
        .with_context(|| format!("keeping the generated token in {}", path.display()))?;
    Ok((AuthMode::Token(secret), Credential::Generated(path, origin)))
}

fn build_config(
    mut args: Args,
    token_from_flag: bool,
    file: FileConfig,
) -> anyhow::Result<(Config, Startup)> {
    let b = file.bridge;
    let (auth, credential) = resolve_credential(
        args.token.take().map(|t| (t, token_from_flag)),
        args.token_file.take(),
        &b,
        args.no_auth || b.no_auth,
    )?;
    let mut c = Config::default();
    if let Some(listen) = args.listen.or(b.listen) {
        c.listen = listen;
    }
    if let Some(socket) = args.socket.or(b.socket).or(file.daemon.socket) {
        c.socket = socket;
    }
    let pick = |flag: Option<Duration>, file: Option<Duration>, default: Duration| {
        flag.or(file).unwrap_or(default)
    };
    c.heartbeat_interval =
        pick(args.heartbeat_interval, b.heartbeat_interval, defaults::HEARTBEAT_INTERVAL);
    c.pong_timeout = pick(args.pong_timeout, b.pong_timeout, defaults::PONG_TIMEOUT);
    c.grace = pick(args.grace, b.grace, defaults::GRACE);
    c.claim_timeout = pick(args.claim_timeout, b.claim_timeout, defaults::CLAIM_TIMEOUT);
    c.idle_timeout = pick(args.idle_timeout, b.idle_timeout, defaults::IDLE_TIMEOUT);
    c.reconnect_initial =
        pick(args.reconnect_initial, b.reconnect_initial, defaults::RECONNECT_INITIAL);
    c.reconnect_max = pick(args.reconnect_max, b.reconnect_max, defaults::RECONNECT_MAX);
    c.replay_bytes = args.replay_bytes.or(b.replay_bytes).unwrap_or(defaults::REPLAY_BYTES);
    c.max_message_bytes =
        args.max_message_bytes.or(b.max_message_bytes).unwrap_or(defaults::MAX_MESSAGE_BYTES);
    c.flow_high = args.flow_high.or(b.flow_high).unwrap_or(defaults::FLOW_HIGH);
    // A --flow-high below the default low watermark keeps working without a --flow-low.
    c.flow_low = args.flow_low.or(b.flow_low).unwrap_or(defaults::FLOW_LOW.min(c.flow_high / 2));
    c.resize_policy = args.resize_policy.or(b.resize_policy).unwrap_or_default();
    c.allowed_origins =
        if args.allowed_origin.is_empty() { b.allowed_origin } else { args.allowed_origin };
    c.auth = auth;
    c.allowed_hosts = if args.allowed_host.is_empty() { b.allowed_host } else { args.allowed_host };
    c.public_url = match args.public_url {
        Some(url) => Some(url),
        None => b.public_url.as_deref().map(str::parse).transpose().map_err(anyhow::Error::msg)?,
    };
    c.ticket_ttl = pick(args.ticket_ttl, b.ticket_ttl, defaults::TICKET_TTL);
    c.ws_read_buffer = args.ws_read_buffer.or(b.ws_read_buffer).unwrap_or(defaults::WS_READ_BUFFER);
    c.ws_write_buffer =
        args.ws_write_buffer.or(b.ws_write_buffer).unwrap_or(defaults::WS_WRITE_BUFFER);
    c.header_timeout = pick(args.header_timeout, b.header_timeout, defaults::HEADER_TIMEOUT);
    c.max_connections =
        args.max_connections.or(b.max_connections).unwrap_or(defaults::MAX_CONNECTIONS);
    c.max_anonymous_connections = args
        .max_anonymous_connections
        .or(b.max_anonymous_connections)
        .unwrap_or(defaults::MAX_ANONYMOUS_CONNECTIONS);
    // Configured profiles add to (or replace) the login-shell default.
    c.profiles.extend(b.profiles);
    if let Some(name) = args.default_profile.or(b.default_profile) {
        c.default_profile = name;
    }
    let autostart = (!(args.no_spawn_daemon || b.no_spawn_daemon)).then(|| Autostart {
        socket: c.socket.clone(),
        ptyd_bin: args.ptyd_bin.or(b.ptyd_bin),
        config: args.config.clone(),
        timeout: args
            .daemon_start_timeout
            .or(b.daemon_start_timeout)
            .unwrap_or(defaults::DAEMON_START_TIMEOUT),
    });
    let log_format = args.log_format.or(b.log_format).unwrap_or(LogFormat::Text);
    Ok((c, Startup { log_format, autostart, credential }))
}

/// Logs where the credential came from and what that means, without the token.
fn announce_credential(credential: &Credential, config: &Config) {
    match credential {
        Credential::Flag => tracing::warn!(
            "--token on the command line is visible to every local user (ps, \
             /proc/PID/cmdline); prefer --token-file or PTYD_BRIDGE_TOKEN"
        ),
        Credential::Env => tracing::info!("authentication: token from PTYD_BRIDGE_TOKEN"),
        Credential::ConfigFile => tracing::info!("authentication: token from the config file"),
        Credential::File(path) => {
            tracing::info!("authentication: token from {}", path.display())
        }
        Credential::Generated(path, token::Origin::Created) => tracing::info!(
            "authentication: generated a token in {}; the login URL is printed on stdout",
            path.display()
        ),
        Credential::Generated(path, token::Origin::Reused) => tracing::info!(
            "authentication: using the token generated earlier in {}; the login URL is \
             printed on stdout",
            path.display()
        ),
        Credential::Disabled => tracing::warn!(
            "authentication is disabled (--no-auth): any local user, and any web page that \
             can reach {}, can run commands as uid {}",
            config.listen,
            nix::unistd::getuid()
        ),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).init(),
    }
}

async fn shutdown_signal() {
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install SIGTERM/SIGINT handlers; stop ptyd-bridge with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("received SIGTERM"),
        _ = int.recv() => tracing::info!("received SIGINT"),
    }
}

/// Variables that carry the credential: read once, then removed from the environment so
/// that neither an autostarted ptyd nor the shells it runs can read them.
const SECRET_ENV: &[&str] = &["PTYD_BRIDGE_TOKEN", "CREDENTIALS_DIRECTORY"];

fn main() -> ExitCode {
    // Before anything opens a descriptor of its own: a lock or a pipe the caller left open
    // must not be held by the bridge (nor by a ptyd it starts).
    ptyd_bridge::fds::close_inherited();
    let matches = Args::command().get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let token_from_flag = matches.value_source("token") == Some(ValueSource::CommandLine);
    let built = load_file(&args.config).and_then(|file| build_config(args, token_from_flag, file));
    for var in SECRET_ENV {
        // No other thread runs yet (the runtime starts below), so no one reads it meanwhile.
        std::env::remove_var(var);
    }
    let (config, startup) = match built {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ptyd-bridge: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_logging(startup.log_format);
    announce_credential(&startup.credential, &config);
    // Refuse unsafe settings before binding anything.
    if let Err(e) = config.validate() {
        tracing::error!("{e}");
        eprintln!("ptyd-bridge: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ptyd-bridge")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ptyd-bridge: starting the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, startup)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("ptyd-bridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, startup: Startup) -> anyhow::Result<()> {
    if let Some(autostart) = &startup.autostart {
        ensure_daemon(autostart).await.context("starting ptyd")?;
    }
    let listener = ptyd_bridge::server::bind(config.listen)
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let login = match (&startup.credential, &config.auth) {
        (Credential::Generated(..), AuthMode::Token(t)) => Some(t.clone()),
        _ => None,
    };
    let bridge = ptyd_bridge::Bridge::start(config, addr).await?;
    // Tests and scripts read the bound port from this line; a closed stdout is no error.
    // The login URL is the one place the token is printed: on stdout, to the person who
    // started the bridge, never in a log line.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on http://{addr}").and_then(|()| out.flush());
        if let (Some(token), Credential::Generated(path, _)) = (login, &startup.credential) {
            let base = bridge.state().auth.public_url().http_base();
            // Under systemd stdout is the journal, which others may read: name the file.
            let line = if std::env::var_os("JOURNAL_STREAM").is_some() {
                format!("open {base}/?token=<the token in {}> to log in", path.display())
            } else {
                format!("open {base}/?token={} to log in", token.expose())
            };
            let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        }
    }
    tracing::info!("listening on http://{addr}");
    if !ptyd_bridge::assets::available() {
        tracing::warn!(
            "the web page was not built into this binary; build it with \
             `npm --prefix client-js ci && npm --prefix client-js run build`, then ptyd-bridge"
        );
    }
    let state = bridge.state().clone();
    notify::ready(&state);
    tokio::spawn(notify::run(state.clone(), state.shutdown.clone()));
    let stop = async {
        shutdown_signal().await;
        notify::stopping();
    };
    bridge.serve(listener, stop).await.context("serving")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[daemon]
socket = "/run/test/ptyd.sock"
capacity = 3

[bridge]
grace = "2s"
idle_timeout = "1m"
allowed_origins = ["https://a.example"]
no_spawn_daemon = true

[bridge.profiles.top]
command = "top"
args = ["-d", "1"]
env = { LANG = "C.UTF-8" }
"#;

    #[test]
    fn the_low_watermark_follows_a_small_high_one() {
        let config = |argv: &[&str]| {
            let args =
                Args::try_parse_from([&["ptyd-bridge", "--no-auth"], argv].concat()).unwrap();
            build_config(args, false, FileConfig::default()).unwrap().0
        };
        let c = config(&[]);
        assert_eq!((c.flow_high, c.flow_low), (defaults::FLOW_HIGH, defaults::FLOW_LOW));
        let c = config(&["--flow-high", "65536"]);
        assert_eq!((c.flow_high, c.flow_low), (65536, 32768));
        let c = config(&["--flow-high", "65536", "--flow-low", "1024"]);
        assert_eq!(c.flow_low, 1024);
    }

    #[test]
    fn flags_win_over_the_file_and_the_daemon_table_names_the_socket() {
        let file: FileConfig = toml::from_str(FILE).unwrap();
        let args = Args::try_parse_from(["ptyd-bridge", "--grace", "200ms", "--no-auth"]).unwrap();
        let (c, startup) = build_config(args, false, file).unwrap();
        assert_eq!(c.socket, PathBuf::from("/run/test/ptyd.sock"));
        assert_eq!(c.grace, Duration::from_millis(200));
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.heartbeat_interval, defaults::HEARTBEAT_INTERVAL);
        assert_eq!(c.allowed_origins, vec!["https://a.example".to_string()]);
        assert_eq!(c.profiles["top"].args, vec!["-d".to_string(), "1".to_string()]);
        assert!(c.profiles.contains_key("default"), "the login shell stays available");
        assert!(startup.autostart.is_none());
        c.validate().unwrap();
    }

    #[test]
    fn unknown_bridge_keys_are_refused() {
        let err = toml::from_str::<FileConfig>("[bridge]\ngrase = \"1s\"\n").unwrap_err();
        assert!(err.to_string().contains("grase"), "{err}");
        // ptyd's own keys are ptyd's business.
        toml::from_str::<FileConfig>("[daemon]\nkill_grace = \"2s\"\n").unwrap();
    }

    #[test]
    fn a_token_file_is_read_and_trimmed() {
        let path = std::env::temp_dir().join(format!("ptyd-bridge-token-{}", std::process::id()));
        std::fs::write(&path, "  s3cret\n").unwrap();
        let flag = path.to_str().unwrap();
        let args = Args::try_parse_from(["ptyd-bridge", "--token-file", flag]).unwrap();
        let (c, startup) = build_config(args, false, FileConfig::default()).unwrap();
        assert_eq!(c.auth, AuthMode::Token(Secret::new("s3cret")));
        assert_eq!(startup.credential, Credential::File(path.clone()));
        std::fs::write(&path, "\n").unwrap();
        let args = Args::try_parse_from(["ptyd-bridge", "--token-file", flag]).unwrap();
        assert!(build_config(args, false, FileConfig::default()).is_err());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn no_auth_is_explicit_and_excludes_a_token() {
        let args = Args::try_parse_from(["ptyd-bridge", "--no-auth"]).unwrap();
        let (c, startup) = build_config(args, false, FileConfig::default()).unwrap();
        assert_eq!((c.auth, startup.credential), (AuthMode::Disabled, Credential::Disabled));
        let args = Args::try_parse_from(["ptyd-bridge", "--no-auth", "--token", "x"]).unwrap();
        let err = build_config(args, true, FileConfig::default()).err().unwrap();
        assert!(err.to_string().contains("conflicts"), "{err}");
    }
}
