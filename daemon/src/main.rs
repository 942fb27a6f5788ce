//! ptyd: flags, environment and the TOML file into a `Config`; logging; signals; run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use serde::Deserialize;
use tokio::signal::unix::{signal, SignalKind};

use ptyd::config::{defaults, Config};

#[derive(Copy, Clone, Debug, ValueEnum, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum LogFormat {
    Text,
    Json,
}

/// PTY session daemon: a capacity-bounded pool of pseudo-terminals served over a Unix socket.
///
/// Every flag can also be set with its PTYD_* environment variable or in the [daemon]
/// table of the TOML file given with --config; flags win over the environment, which wins
/// over the file. Durations are human-readable: 200ms, 10s, 5m.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// Unix socket to serve [default: $XDG_RUNTIME_DIR/ptyd/ptyd.sock, else /tmp/ptyd-$UID/ptyd.sock]
    #[arg(long, env = "PTYD_SOCKET")]
    socket: Option<PathBuf>,
    /// Sessions that may run at once; spawns beyond it fail with AtCapacity [default: 64]
    #[arg(long, env = "PTYD_CAPACITY")]
    capacity: Option<usize>,
    /// Output kept per session for replay on attach [default: 4096]
    #[arg(long, env = "PTYD_REPLAY_BYTES")]
    replay_bytes: Option<usize>,
    /// Kill a session after this long with no input, output or client; 0 = never [default: 5m]
    #[arg(long, env = "PTYD_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    idle_timeout: Option<Duration>,
    /// Time between SIGHUP and SIGKILL when a session ends [default: 1s]
    #[arg(long, env = "PTYD_KILL_GRACE", value_parser = humantime::parse_duration)]
    kill_grace: Option<Duration>,
    /// How long an exited session's status stays available to wait/info/attach [default: 5m]
    #[arg(long, env = "PTYD_RETENTION", value_parser = humantime::parse_duration)]
    retention: Option<Duration>,
    /// Also let members of this group (name or gid) connect; otherwise only the daemon's user and root may
    #[arg(long, env = "PTYD_ALLOW_GROUP")]
    allow_group: Option<String>,
    /// Log format on stderr; the level comes from RUST_LOG (default info) [default: text]
    #[arg(long, env = "PTYD_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// TOML file with a [daemon] table using the same names as these flags (kill_grace = "2s")
    #[arg(long, env = "PTYD_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    daemon: DaemonTable,
    /// The bridge's table; read by ptyd-bridge, ignored here.
    #[serde(default)]
    #[allow(dead_code)]
    bridge: Option<toml::Table>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct DaemonTable {
    socket: Option<PathBuf>,
    capacity: Option<usize>,
    replay_bytes: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    idle_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    kill_grace: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    retention: Option<Duration>,
    allow_group: Option<String>,
    log_format: Option<LogFormat>,
}

fn load_file(path: &Option<PathBuf>) -> anyhow::Result<DaemonTable> {
    let Some(path) = path else { return Ok(DaemonTable::default()) };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let file: FileConfig =
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))?;
    Ok(file.daemon)
}

fn resolve_group(name: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let group =
        nix::unistd::Group::from_name(name).with_context(|| format!("looking up group {name}"))?;
    group.map(|g| g.gid.as_raw()).with_context(|| format!("no such group: {name}"))
}

fn build_config(args: Args, file: DaemonTable) -> anyhow::Result<(Config, LogFormat)> {
    let mut config = Config::default();
    if let Some(socket) = args.socket.or(file.socket) {
        config.socket = socket;
    }
    config.capacity = args.capacity.or(file.capacity).unwrap_or(defaults::CAPACITY);
    anyhow::ensure!(config.capacity > 0, "capacity must be at least 1");
    config.replay_bytes = args.replay_bytes.or(file.replay_bytes).unwrap_or(defaults::REPLAY_BYTES);
    anyhow::ensure!(
        (1..=defaults::MAX_REPLAY_BYTES).contains(&config.replay_bytes),
        "replay-bytes must be between 1 and {}",
        defaults::MAX_REPLAY_BYTES
    );
    config.idle_timeout = args.idle_timeout.or(file.idle_timeout).unwrap_or(defaults::IDLE_TIMEOUT);
    config.kill_grace = args.kill_grace.or(file.kill_grace).unwrap_or(defaults::KILL_GRACE);
    config.retention = args.retention.or(file.retention).unwrap_or(defaults::RETENTION);
    config.allow_gid =
        args.allow_group.or(file.allow_group).map(|g| resolve_group(&g)).transpose()?;
    let log_format = args.log_format.or(file.log_format).unwrap_or(LogFormat::Text);
    Ok((config, log_format))
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
        tracing::error!("cannot install SIGTERM/SIGINT handlers; stop ptyd with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("received SIGTERM"),
        _ = int.recv() => tracing::info!("received SIGINT"),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let file = match load_file(&args.config) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("ptyd: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let (config, log_format) = match build_config(args, file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ptyd: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(log_format);
    ptyd::systemd::init();
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("ptyd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    // A socket handed over by systemd is used as is and never unlinked: systemd owns it.
    let (listener, socket_file) =
        match ptyd::systemd::activated_listener().context("socket activation")? {
            Some(listener) => (listener, None),
            None => {
                let (listener, file) = ptyd::socket::bind(&config.socket)?;
                (listener, Some(file))
            }
        };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ptyd-worker")
        .build()
        .context("starting the tokio runtime")?;
    match ptyd::systemd::bound_path(&listener) {
        Some(path) if socket_file.is_none() => {
            tracing::info!(socket = %path.display(), "listening on the socket systemd passed")
        }
        Some(path) => tracing::info!(socket = %path.display(), "listening"),
        None => tracing::info!("listening on an unnamed socket systemd passed"),
    }
    let result = runtime.block_on(async {
        let listener = tokio::net::UnixListener::from_std(listener)?;
        ptyd::run(config, listener, shutdown_signal()).await
    });
    if let Some(file) = socket_file {
        file.remove();
    }
    result.context("serving")
}
