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

/// A feature turned on or off.
#[derive(Copy, Clone, Debug, ValueEnum, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Switch {
    On,
    Off,
}

/// Whether sessions get cgroups of their own.
#[derive(Copy, Clone, Debug, ValueEnum, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum CgroupMode {
    /// A cgroup per session when a writable cgroup v2 hierarchy exists, else process groups.
    Auto,
    /// Process groups only.
    Off,
}

/// Exit code for a configuration ptyd cannot run with (as clap's usage errors).
const CONFIG_ERROR: u8 = 2;

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
    /// Lines of history each session's screen keeps for `screen` and attach snapshots
    /// (about 2.5 KiB per filled 80-column line) [default: 1000]
    #[arg(long, env = "PTYD_SCROLLBACK_LINES")]
    scrollback_lines: Option<usize>,
    /// Keep a screen model per session (for `screen`, attach snapshots, wait-for --screen);
    /// off saves its memory and parsing, and attaches fall back to bytes [default: on]
    #[arg(long, env = "PTYD_SCREEN", value_enum)]
    screen: Option<Switch>,
    /// Give the interactive bash and zsh that sessions start semantic prompt marks
    /// (OSC 133, after the user's own startup files), which `run` needs [default: on]
    #[arg(long, env = "PTYD_SHELL_INTEGRATION", value_enum)]
    shell_integration: Option<Switch>,
    /// Exited sessions kept at most, oldest forgotten first [default: 1024]
    #[arg(long, env = "PTYD_MAX_RETAINED")]
    max_retained: Option<usize>,
    /// Memory exited sessions may keep in all (output and records), oldest forgotten first
    /// (K, M, G suffixes) [default: 64M]
    #[arg(long, env = "PTYD_MAX_RETAINED_BYTES", value_parser = parse_bytes)]
    max_retained_bytes: Option<u64>,
    /// Close a client connection that has nothing open (no attachment, wait, lease,
    /// subscription or owned session) and sends nothing for this long; 0 = never [default: 10m]
    #[arg(long, env = "PTYD_IPC_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    ipc_idle_timeout: Option<Duration>,
    /// A frame that has begun must arrive whole within this time [default: 10s]
    #[arg(long, env = "PTYD_FRAME_TIMEOUT", value_parser = humantime::parse_duration)]
    frame_timeout: Option<Duration>,
    /// Bytes all connections together may hold in unfinished frames; a connection that
    /// would pass it is closed (K, M, G suffixes) [default: 64M]
    #[arg(long, env = "PTYD_MAX_PARTIAL_FRAME_BYTES", value_parser = parse_bytes)]
    max_partial_frame_bytes: Option<u64>,
    /// The most sessions one uid may run at once; more fail with QuotaExceeded [default: no limit]
    #[arg(long, env = "PTYD_MAX_SESSIONS_PER_UID", value_parser = clap::value_parser!(u64).range(1..))]
    max_sessions_per_uid: Option<u64>,
    /// Slots kept for interactive sessions (spawned with "interactive": true, as browser
    /// terminals are), so that agents filling the pool cannot lock people out [default: 0]
    #[arg(long, env = "PTYD_INTERACTIVE_RESERVE")]
    interactive_reserve: Option<usize>,
    /// Also let members of this group (name or gid) connect; otherwise only the daemon's user and root may
    #[arg(long, env = "PTYD_ALLOW_GROUP")]
    allow_group: Option<String>,
    /// Run each session in a cgroup (v2) of its own, so ending it kills everything it started; off: process groups only [default: auto]
    #[arg(long, env = "PTYD_CGROUP", value_enum)]
    cgroup: Option<CgroupMode>,
    /// pids.max of each session's cgroup (processes and threads); needs the pids controller
    #[arg(long, env = "PTYD_SESSION_PIDS_MAX", value_parser = clap::value_parser!(u64).range(1..))]
    session_pids_max: Option<u64>,
    /// memory.max of each session's cgroup, in bytes (K, M, G, T suffixes: powers of 1024); needs the memory controller
    #[arg(long, env = "PTYD_SESSION_MEMORY_MAX", value_parser = parse_bytes)]
    session_memory_max: Option<u64>,
    /// Log format on stderr; the level comes from RUST_LOG (default info) [default: text]
    #[arg(long, env = "PTYD_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// TOML file with a [daemon] table using the same names as these flags (kill_grace = "2s")
    #[arg(long, env = "PTYD_CONFIG")]
    config: Option<PathBuf>,
    /// Say which handover states this binary writes and loads (and, given one in
    /// PTYD_HANDOVER_FD, load it), then exit: what `upgrade` asks a new binary first
    #[arg(long)]
    handover_check: bool,
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
    scrollback_lines: Option<usize>,
    screen: Option<Switch>,
    shell_integration: Option<Switch>,
    max_retained: Option<usize>,
    max_retained_bytes: Option<ByteSize>,
    #[serde(default, with = "humantime_serde")]
    ipc_idle_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    frame_timeout: Option<Duration>,
    max_partial_frame_bytes: Option<ByteSize>,
    max_sessions_per_uid: Option<u64>,
    interactive_reserve: Option<usize>,
    allow_group: Option<String>,
    cgroup: Option<CgroupMode>,
    session_pids_max: Option<u64>,
    session_memory_max: Option<ByteSize>,
    log_format: Option<LogFormat>,
}

/// A byte count in the TOML file: `1048576` or `"512M"`.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum ByteSize {
    Number(u64),
    Text(String),
}

/// `1048576`, `64K`, `512M`, `2G`, `1T` (binary multiples; an optional trailing `B` or `iB`).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t.strip_suffix("iB").or_else(|| t.strip_suffix('B')).unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{text:?}: unknown unit {c:?} (use K, M, G or T)")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits.trim().parse().map_err(|_| format!("{text:?} is not a byte count"))?;
    let bytes =
        n.checked_shl(shift).filter(|b| b >> shift == n).ok_or(format!("{text:?} is too large"))?;
    if bytes == 0 {
        return Err("must be at least 1 byte".into());
    }
    Ok(bytes)
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

fn build_config(args: Args, file: DaemonTable) -> anyhow::Result<(Config, LogFormat, CgroupMode)> {
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
    config.max_retained = args.max_retained.or(file.max_retained).unwrap_or(defaults::MAX_RETAINED);
    let lines =
        args.scrollback_lines.or(file.scrollback_lines).unwrap_or(defaults::SCROLLBACK_LINES);
    config.scrollback_lines = match args.screen.or(file.screen).unwrap_or(Switch::On) {
        Switch::On => Some(lines),
        Switch::Off => None,
    };
    config.shell_integration =
        args.shell_integration.or(file.shell_integration).unwrap_or(Switch::On) == Switch::On;
    let bytes = |flag: Option<u64>, file: Option<ByteSize>, name: &str, default: usize| {
        let n = match (flag, file) {
            (Some(n), _) | (None, Some(ByteSize::Number(n))) => n,
            (None, Some(ByteSize::Text(t))) => {
                parse_bytes(&t).map_err(|e| anyhow::anyhow!("{name}: {e}"))?
            }
            (None, None) => return Ok::<_, anyhow::Error>(default),
        };
        usize::try_from(n).map_err(|_| anyhow::anyhow!("{name}: {n} is too large"))
    };
    config.max_retained_bytes = bytes(
        args.max_retained_bytes,
        file.max_retained_bytes,
        "max_retained_bytes",
        defaults::MAX_RETAINED_BYTES,
    )?;
    config.ipc_idle_timeout =
        args.ipc_idle_timeout.or(file.ipc_idle_timeout).unwrap_or(defaults::IPC_IDLE_TIMEOUT);
    config.frame_timeout =
        args.frame_timeout.or(file.frame_timeout).unwrap_or(defaults::FRAME_TIMEOUT);
    anyhow::ensure!(!config.frame_timeout.is_zero(), "frame-timeout must be above zero");
    config.max_partial_frame_bytes = bytes(
        args.max_partial_frame_bytes,
        file.max_partial_frame_bytes,
        "max_partial_frame_bytes",
        defaults::MAX_PARTIAL_FRAME_BYTES,
    )?;
    config.max_sessions_per_uid =
        args.max_sessions_per_uid.or(file.max_sessions_per_uid).map(|n| n as usize);
    anyhow::ensure!(
        config.max_sessions_per_uid != Some(0),
        "max-sessions-per-uid must be at least 1"
    );
    config.interactive_reserve = args.interactive_reserve.or(file.interactive_reserve).unwrap_or(0);
    anyhow::ensure!(
        config.interactive_reserve < config.capacity,
        "interactive-reserve ({}) must be below the capacity ({})",
        config.interactive_reserve,
        config.capacity
    );
    config.allow_gid =
        args.allow_group.or(file.allow_group).map(|g| resolve_group(&g)).transpose()?;
    config.session_limits.pids_max = args.session_pids_max.or(file.session_pids_max);
    anyhow::ensure!(
        config.session_limits.pids_max != Some(0),
        "session-pids-max must be at least 1"
    );
    config.session_limits.memory_max = match (args.session_memory_max, file.session_memory_max) {
        (Some(n), _) | (None, Some(ByteSize::Number(n))) => Some(n),
        (None, Some(ByteSize::Text(t))) => {
            Some(parse_bytes(&t).map_err(|e| anyhow::anyhow!("session_memory_max: {e}"))?)
        }
        (None, None) => None,
    };
    anyhow::ensure!(
        config.session_limits.memory_max != Some(0),
        "session-memory-max must be at least 1"
    );
    let cgroup = args.cgroup.or(file.cgroup).unwrap_or(CgroupMode::Auto);
    let log_format = args.log_format.or(file.log_format).unwrap_or(LogFormat::Text);
    Ok((config, log_format, cgroup))
}

/// Gives sessions cgroups of their own (`--cgroup auto`) or says once why they run in
/// process groups only. A limit that cannot be enforced is a configuration error.
fn set_up_cgroups(
    config: &mut Config,
    mode: CgroupMode,
    existing: ptyd::cgroup::Existing,
) -> anyhow::Result<()> {
    let limits = config.session_limits;
    if mode == CgroupMode::Off {
        if let Some(flag) = [
            limits.pids_max.map(|_| "--session-pids-max"),
            limits.memory_max.map(|_| "--session-memory-max"),
        ]
        .into_iter()
        .flatten()
        .next()
        {
            anyhow::bail!("{flag} needs cgroup containment, which --cgroup off turns off");
        }
        ptyd::cgroup::log_fallback("--cgroup off");
        return Ok(());
    }
    match ptyd::cgroup::CgroupTree::setup(limits, existing)? {
        ptyd::cgroup::Setup::Contained(tree) => config.cgroups = Some(tree),
        ptyd::cgroup::Setup::Unavailable(reason) => ptyd::cgroup::log_fallback(&reason),
    }
    Ok(())
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
    // First of all, before any thread or descriptor of ptyd's own exists: the state a
    // live upgrade handed over, if any, and the descriptors it names…
    // SAFETY: nothing else has run yet; this is the only thread.
    #[allow(unsafe_code)]
    let handover = unsafe { ptyd::upgrade::adopt::take() };
    let checking = std::env::args_os().any(|a| a == "--handover-check");
    // …then whatever else the caller left open (a lock, a pipe) is closed: it must not be
    // held for the daemon's whole life.
    let first_closed = match &handover {
        Some(Ok(adoption)) => match adoption.secure_descriptors() {
            Ok(()) => 0,
            Err(why) if checking => {
                eprintln!("ptyd: {why}");
                return ExitCode::FAILURE;
            }
            Err(why) => {
                eprintln!("ptyd: cannot take over from the previous image: {why}");
                let e = adoption.fall_back(&why);
                eprintln!("ptyd: and cannot go back to it either: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => ptyd::fds::close_inherited(),
    };
    let args = Args::parse();
    if args.handover_check {
        return handover_check(handover);
    }
    let adoption = match handover {
        None => None,
        Some(Ok(adoption)) => Some(adoption),
        Some(Err(e)) => {
            // `upgrade` had this very binary load the state before the exec, so this is
            // not expected; the sessions cannot be found without it.
            eprintln!("ptyd: cannot read the handover state: {e}");
            return ExitCode::FAILURE;
        }
    };
    let file = match load_file(&args.config) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("ptyd: {e:#}");
            return ExitCode::from(CONFIG_ERROR);
        }
    };
    let (mut config, log_format, cgroup) = match build_config(args, file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ptyd: {e:#}");
            return ExitCode::from(CONFIG_ERROR);
        }
    };
    init_logging(log_format);
    tracing::debug!(from = first_closed, "closed the inherited descriptors ptyd did not ask for");
    let existing = match adoption {
        Some(_) => ptyd::cgroup::Existing::Keep,
        None => ptyd::cgroup::Existing::Replace,
    };
    if let Err(e) = set_up_cgroups(&mut config, cgroup, existing) {
        tracing::error!("{e:#}");
        eprintln!("ptyd: {e:#}");
        return ExitCode::from(CONFIG_ERROR);
    }
    config.spawner = start_spawn_helper();
    ptyd::systemd::init();
    let cgroups = config.cgroups.clone();
    let result = run(config, adoption);
    // Every session has ended by now; this removes what a stuck one may have left.
    if let Some(tree) = cgroups {
        tree.remove();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("ptyd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Forks the spawn helper while ptyd is still one thread and few pages: the cheapest
/// moment to copy it (`spawner.rs`).
#[allow(unsafe_code)]
fn start_spawn_helper() -> Option<std::sync::Arc<ptyd::spawner::SpawnHelper>> {
    // SAFETY: called from `main` before the runtime (the first thread) starts in `run`.
    match unsafe { ptyd::spawner::SpawnHelper::start() } {
        Ok(helper) => {
            tracing::debug!(pid = helper.pid(), "spawn helper started");
            Some(std::sync::Arc::new(helper))
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the spawn helper; ptyd forks sessions itself");
            None
        }
    }
}

/// `--handover-check`: the line `upgrade` reads, and the state loaded when one was given.
fn handover_check(
    handover: Option<Result<ptyd::upgrade::adopt::Adoption, ptyd::upgrade::state::LoadError>>,
) -> ExitCode {
    println!("{}", ptyd::upgrade::check_line());
    match handover {
        None => ExitCode::SUCCESS,
        Some(Ok(adoption)) => {
            // Every session rebuilt (screens redrawn, rings refilled) and let go, as the
            // real take-over will, so that a binary that cannot is refused before it runs.
            let loaded = &adoption.loaded;
            for record in &loaded.header.sessions {
                if let Err(e) = ptyd::session::handover::restore(record, loaded, None) {
                    eprintln!("ptyd: session {}: {e}", record.id);
                    return ExitCode::FAILURE;
                }
            }
            println!("state loaded: {} sessions", loaded.header.sessions.len());
            ExitCode::SUCCESS
        }
        Some(Err(e)) => {
            eprintln!("ptyd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config, adoption: Option<ptyd::upgrade::adopt::Adoption>) -> anyhow::Result<()> {
    // A socket handed over by systemd is used as is and never unlinked: systemd owns it.
    // After a live upgrade, the socket is the one the previous image served.
    let (listener, socket_file) = match &adoption {
        Some(adoption) => {
            let listener = match adoption.listener() {
                Ok(listener) => listener,
                Err(e) => {
                    // Nothing is served or adopted yet: the old binary can take over again.
                    let why = format!("taking over the listening socket: {e}");
                    let back = adoption.fall_back(&why);
                    anyhow::bail!("{why}; and cannot go back to the old binary: {back}");
                }
            };
            let file = adoption.loaded.header.socket_path.as_deref().and_then(|path| {
                ptyd::socket::SocketFile::adopt(path)
                    .inspect_err(|e| tracing::warn!("the socket file {}: {e}", path.display()))
                    .ok()
            });
            (listener, file)
        }
        None => match ptyd::systemd::activated_listener().context("socket activation")? {
            Some(listener) => (listener, None),
            None => {
                let (listener, file) = ptyd::socket::bind(&config.socket)?;
                (listener, Some(file))
            }
        },
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
    let socket_path = socket_file.as_ref().map(|f| f.path().to_path_buf());
    let result = runtime.block_on(async {
        let listener = tokio::net::UnixListener::from_std(listener)?;
        let start = ptyd::Start { listener, socket_file: socket_path, adoption };
        ptyd::run(config, start, shutdown_signal()).await
    });
    if let Some(file) = socket_file {
        file.remove();
    }
    result.context("serving")
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_counts_take_binary_units() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("1t"), Ok(1 << 40));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("12X").is_err());
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999T").is_err());
    }
}
