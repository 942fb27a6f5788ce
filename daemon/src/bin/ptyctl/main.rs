//! ptyctl: the command-line client of ptyd. Dispatch, the one-shot commands and exit codes.

mod agent;
mod attach;
mod cli;
mod doctor;
mod plain;
mod stdio;
mod table;
mod term;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context as _, Result};
use bytes::{Bytes, BytesMut};
use clap::Parser as _;
use ipc_proto::{
    Client, ClientError, ErrorCode, IpcError, MatchOn, RunRequest, SessionId, SpawnRequest,
};
use tokio::net::UnixStream;

use cli::{Cli, Command, Size, SpawnOpts};
use plain::Render;

// ptyctl's exit statuses: one table for every subcommand (`cli::EXIT_CODES`, printed by
// `ptyctl --help`, and the README). The commands that exit with their session's own code
// (`exec`, `run`, `wait`, `attach`) cannot also use 2–5 for ptyctl's outcomes: for them any
// failure is 125, as for timeout(1) and env(1).

/// `--timeout` expired, as timeout(1) says.
const EXIT_TIMEOUT: i32 = 124;
/// ptyctl or the daemon failed (cannot connect, spawn failed, internal error), and every
/// failure of a command that exits with its session's code.
const EXIT_FAILED: i32 = 125;
/// A usage error (clap uses it too), or a request the daemon found malformed (an invalid
/// regex, `--since` past the end, an ambiguous id prefix).
const EXIT_USAGE: i32 = 2;
/// The session had exited, or exited before what was waited for happened.
const EXIT_SESSION_EXITED: i32 = 3;
/// No such session: an unknown id, or a prefix of none.
const EXIT_NOT_FOUND: i32 = 4;
/// The daemon refused: pool at capacity or quota, peer not allowed, shutting down, no shell
/// integration, the shell busy.
const EXIT_REFUSED: i32 = 5;

/// What an error makes ptyctl exit with.
fn exit_code_for_kind(kind: cli::Kind, err: &anyhow::Error) -> i32 {
    if is_timeout(err) {
        return EXIT_TIMEOUT;
    }
    if kind == cli::Kind::PassesSessionCode {
        return EXIT_FAILED;
    }
    match err.chain().find_map(|e| e.downcast_ref::<ClientError>()?.code()) {
        Some(ErrorCode::BadRequest) => EXIT_USAGE,
        Some(ErrorCode::SessionExited) => EXIT_SESSION_EXITED,
        Some(ErrorCode::HandleNotFound) => EXIT_NOT_FOUND,
        Some(
            ErrorCode::AtCapacity
            | ErrorCode::QuotaExceeded
            | ErrorCode::PermissionDenied
            | ErrorCode::ShuttingDown
            | ErrorCode::NoShellIntegration
            | ErrorCode::SessionBusy,
        ) => EXIT_REFUSED,
        _ => EXIT_FAILED,
    }
}

/// A `--timeout` expired on ptyctl's side (the daemon's own timeout comes as a
/// `ClientError` with code `Timeout`).
#[derive(Debug)]
struct TimedOut(Duration);

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "timed out after {}", humantime::format_duration(self.0))
    }
}

impl std::error::Error for TimedOut {}

/// The exit status of a process killed by SIGPIPE, as a shell reports it.
const EXIT_BROKEN_PIPE: i32 = 128 + nix::libc::SIGPIPE;

/// A reader that stopped reading (`ptyctl ls | head -1`) ends ptyctl quietly, with the
/// status a shell reports for a pipeline member killed by SIGPIPE: no panic from a
/// `println!`, no error message.
fn quiet_on_broken_stdout() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if text.contains("failed printing to stdout") && text.contains("Broken pipe") {
            std::process::exit(EXIT_BROKEN_PIPE);
        }
        previous(info);
    }));
}

/// Whether `err` is a write to a closed stdout. IPC failures are typed `ClientError`s, so a
/// raw broken-pipe `io::Error` here comes from ptyctl's own output.
fn is_broken_stdout(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() {
    quiet_on_broken_stdout();
    let cli = Cli::parse();
    // What the command was, for its exit status on error, once `cli` is consumed.
    let command_kind = cli::Kind::of(&cli.command);
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|rt| {
            let result = rt.block_on(run(cli));
            // Do not wait for the stdin thread or a blocked stdout write: they end with us.
            rt.shutdown_background();
            result
        });
    let code = match result {
        Ok(code) => code,
        Err(err) if is_broken_stdout(&err) => EXIT_BROKEN_PIPE,
        Err(err) => {
            // The error's name (e.g. AtCapacity) first: it is what RUNBOOK.md is indexed by.
            let name = err.chain().find_map(|e| match e.downcast_ref::<ClientError>()? {
                ClientError::Daemon { code, .. } => Some(code.to_string()),
                ClientError::Ipc(_) => Some("IpcError".to_string()),
            });
            let text = format!("{err:#}");
            match name {
                Some(name) => {
                    let text = text.strip_prefix("IPC error: ").unwrap_or(&text);
                    eprintln!("ptyctl: {name}: {text}");
                }
                None => eprintln!("ptyctl: {text}"),
            }
            exit_code_for_kind(command_kind, &err)
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

fn is_timeout(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.is::<TimedOut>()
            || e.downcast_ref::<ClientError>().and_then(ClientError::code)
                == Some(ErrorCode::Timeout)
    })
}

async fn run(cli: Cli) -> Result<i32> {
    let socket = cli.socket;
    match cli.command {
        Command::Ls { json } => {
            let list = connect(socket).await?.list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", table::sessions(&list, SystemTime::now()));
            }
        }
        Command::Spawn { opts, idle_timeout, replay_bytes, interactive, command } => {
            let size = opts.size.unwrap_or(Size { cols: 80, rows: 24 });
            let mut req = spawn_request(opts, command, size)?;
            req.idle_timeout_ms = idle_timeout.map(millis);
            req.replay_bytes = replay_bytes;
            req.interactive = interactive;
            let reply = connect(socket).await?.spawn(req).await?;
            println!("{}", reply.session);
        }
        Command::Attach { id, since, detach_key } => {
            let session = session_id(&socket, &id).await?;
            let path = socket_path(socket.clone());
            return attach::attach(connect(socket).await?, path, session, since, detach_key.0)
                .await;
        }
        Command::Send { id, text, enter, stdin } => {
            let session = session_id(&socket, &id).await?;
            let client = connect(socket).await?;
            send(&client, session, text, enter, stdin).await?;
        }
        Command::Resize { id, size } => {
            let session = session_id(&socket, &id).await?;
            connect(socket).await?.resize(session, size.cols, size.rows).await?;
        }
        Command::Kill { id, signal } => {
            let session = session_id(&socket, &id).await?;
            connect(socket).await?.kill(session, signal.as_deref()).await?;
        }
        Command::Wait { id, timeout, json } => {
            let session = session_id(&socket, &id).await?;
            let client = connect(socket).await?;
            let status = bounded(timeout, client.wait(session, timeout)).await?;
            if json {
                // Why it ended, from the record the daemon keeps after the exit.
                let end_reason = client.info(session).await.ok().and_then(|i| i.end_reason);
                let out = serde_json::json!({
                    "code": status.code,
                    "signal": status.signal,
                    "end_reason": end_reason,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            return Ok(status.shell_code());
        }
        Command::Info { id, json } => {
            let session = session_id(&socket, &id).await?;
            let info = connect(socket).await?.info(session).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                print!("{}", table::details(&info, SystemTime::now()));
            }
        }
        Command::Exec { opts, json, timeout, max_output, plain, command } => {
            let render = Render::from_flag(plain);
            if json {
                // Nothing is drawn locally: the local terminal's size is irrelevant.
                let size = opts.size.unwrap_or(Size { cols: 80, rows: 24 });
                let req = spawn_request(opts, command, size)?;
                let client = connect(socket).await?;
                return agent::exec_json(&client, req, timeout, max_output, render).await;
            }
            let tty = term::stdin_is_tty();
            // An explicit size stays put; otherwise the session follows the local terminal.
            let follow_size = tty && opts.size.is_none();
            let size = opts
                .size
                .or_else(|| if tty { term::stdin_size() } else { None })
                .or_else(term::stdout_size)
                .unwrap_or(Size { cols: 80, rows: 24 });
            let mut req = spawn_request(opts, command, size)?;
            // The output is drawn by the local terminal, so programs should know its type.
            if tty && !req.env.contains_key("TERM") {
                if let Ok(value) = std::env::var("TERM") {
                    req.env.insert("TERM".into(), value);
                }
            }
            let path = socket_path(socket.clone());
            return attach::exec(connect(socket).await?, path, req, follow_size, timeout, render)
                .await;
        }
        Command::WaitFor { id, regex, since, screen, timeout, json, plain } => {
            let session = session_id(&socket, &id).await?;
            let client = connect(socket).await?;
            let on = if screen { MatchOn::Screen } else { MatchOn::Output };
            let wait = client.wait_for_on(session, &regex, since, timeout, on);
            let reply = bounded(timeout, wait).await?;
            agent::print_match(&reply, json, Render::from_flag(plain))?;
        }
        Command::WaitQuiet { id, duration, timeout, json } => {
            let session = session_id(&socket, &id).await?;
            let client = connect(socket).await?;
            let reply = bounded(timeout, client.wait_quiet(session, duration, timeout)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reply)?);
            }
        }
        Command::Run { id, timeout, json, max_output, plain, command } => {
            let session = session_id(&socket, &id).await?;
            let client = connect(socket).await?;
            let req = RunRequest {
                session,
                command: command.join(" "),
                timeout_ms: timeout.map(millis),
                max_output,
            };
            return agent::run(&client, req, json, Render::from_flag(plain)).await;
        }
        Command::Submit { id, text, wait_for, timeout, json, .. } => {
            let session = session_id(&socket, &id).await?;
            // Checked before anything is typed: a bad regex must not leave the text sent.
            if let Some(pattern) = &wait_for {
                regex::bytes::Regex::new(pattern).map_err(|e| {
                    anyhow::Error::new(ClientError::Daemon {
                        code: ErrorCode::BadRequest,
                        message: format!("invalid regex: {e}"),
                    })
                })?;
            }
            // Clap requires TEXT unless --stdin is given.
            let text = match text {
                Some(text) => text,
                None => agent::stdin_text().await?,
            };
            let client = connect(socket).await?;
            let reply = client.submit(session, &text).await?;
            match wait_for {
                Some(pattern) => {
                    // The reply's offset is where the answer can start (a version 2 daemon
                    // always sends it; without it the daemon's default is the same mark).
                    let wait = client.wait_for(session, &pattern, reply.offset, timeout);
                    agent::print_match(&bounded(timeout, wait).await?, json, Render::Raw)?;
                }
                None if json => println!("{}", serde_json::to_string_pretty(&reply)?),
                None => {}
            }
        }
        Command::Read { id, since, max, json, plain } => {
            let session = session_id(&socket, &id).await?;
            let (reply, data) = connect(socket).await?.read(session, since, max).await?;
            agent::print_read(&reply, &data, json, Render::from_flag(plain))?;
        }
        Command::Screen { id, scrollback, ansi, json } => {
            let session = session_id(&socket, &id).await?;
            let (reply, data) = connect(socket).await?.screen(session, scrollback, ansi).await?;
            agent::print_screen(&reply, &data, ansi, json)?;
        }
        Command::Events { json } => return agent::events(&connect(socket).await?, json).await,
        Command::Upgrade { binary, json } => {
            let binary = binary
                .map(|b| std::path::absolute(&b).map(|p| p.display().to_string()))
                .transpose()
                .context("the binary's path")?;
            let reply = connect(socket).await?.upgrade(binary).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reply)?);
            } else {
                println!(
                    "upgraded ptyd (pid {}) from {} to {} ({}) in {} ms: {} sessions carried, \
                     upgrade number {}",
                    reply.pid,
                    reply.from_version,
                    reply.to_version,
                    reply.binary,
                    reply.duration_ms,
                    reply.sessions,
                    reply.upgrades
                );
            }
        }
        Command::Doctor { json } => {
            let format = if json { doctor::Format::Json } else { doctor::Format::Text };
            return Ok(doctor::run(&socket_path(socket), format).await);
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "ptyctl", &mut std::io::stdout());
        }
        Command::Man => {
            let page = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            page.render(&mut std::io::stdout()).context("cannot write the man page")?;
        }
    }
    Ok(0)
}

/// The socket to use: `--socket` (or `PTYD_SOCKET`, which clap reads) or the default.
fn socket_path(socket: Option<PathBuf>) -> PathBuf {
    socket.filter(|p| !p.as_os_str().is_empty()).unwrap_or_else(ipc_proto::default_socket_path)
}

/// Connects and shakes hands, under ptyctl's own name.
async fn connect(socket: Option<PathBuf>) -> Result<Client> {
    connect_to(&socket_path(socket)).await
}

/// [`connect`] to an already resolved path (`doctor` reports on the path it checked).
async fn connect_to(path: &Path) -> Result<Client> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|e| ClientError::from(IpcError::connect(path, e)))?;
    Ok(Client::handshake(stream, concat!("ptyctl/", env!("CARGO_PKG_VERSION"))).await?)
}

/// Awaits a request that carries `timeout` to the daemon. The daemon enforces it; ptyctl's
/// own, a little later, covers a daemon that does not answer.
async fn bounded<T>(
    timeout: Option<Duration>,
    request: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T> {
    match timeout {
        Some(t) => Ok(tokio::time::timeout(t.saturating_add(Duration::from_secs(2)), request)
            .await
            .map_err(|_| TimedOut(t))??),
        None => Ok(request.await?),
    }
}

/// A session id, or a unique prefix of one (as git and docker take them): the web page
/// and `ls` show ids cut short.
async fn session_id(socket: &Option<PathBuf>, s: &str) -> Result<SessionId> {
    if let Ok(id) = s.parse() {
        return Ok(id);
    }
    let prefix = s.to_ascii_lowercase();
    if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(anyhow::Error::new(ClientError::Daemon {
            code: ErrorCode::BadRequest,
            message: format!("invalid session id '{s}': expected an id or a prefix of one"),
        }));
    }
    let list = connect(socket.clone()).await?.list().await?;
    let matches: Vec<SessionId> = list
        .sessions
        .iter()
        .map(|info| info.session)
        .filter(|id| id.to_string().starts_with(&prefix))
        .collect();
    let refuse = |code, message| anyhow::Error::new(ClientError::Daemon { code, message });
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => Err(refuse(ErrorCode::HandleNotFound, format!("no session id starts with '{s}'"))),
        many => {
            let names: Vec<String> = many.iter().map(|id| id.to_string()).collect();
            Err(refuse(
                ErrorCode::BadRequest,
                format!("session id prefix '{s}' is ambiguous: {}", names.join(", ")),
            ))
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The request shared by `spawn` and `exec`.
fn spawn_request(opts: SpawnOpts, command: Vec<String>, size: Size) -> Result<SpawnRequest> {
    let mut words = command.into_iter();
    let program = words.next().ok_or_else(|| anyhow!("no command given"))?;
    let mut req = SpawnRequest::new(program, words);
    req.cols = size.cols;
    req.rows = size.rows;
    if opts.env_inherit {
        // systemd's hand-over variables (and its per-unit ones) describe this process, not
        // the command.
        let private = |k: &str| {
            ptyd::systemd::PRIVATE_ENV.contains(&k)
                || ["INVOCATION_ID", "JOURNAL_STREAM"].contains(&k)
        };
        req.env = std::env::vars().filter(|(k, _)| !private(k)).collect();
    }
    req.env.extend(opts.env);
    req.labels = opts.labels.into_iter().collect::<BTreeMap<_, _>>();
    // Like tmux, a command starts where the caller is, not where the daemon runs.
    let cwd = opts.cwd.or_else(|| std::env::current_dir().ok());
    if let Some(dir) = cwd {
        // The daemon has its own working directory: resolve relative paths against ours.
        let dir = std::path::absolute(&dir)
            .with_context(|| format!("invalid working directory '{}'", dir.display()))?;
        let dir = dir
            .into_os_string()
            .into_string()
            .map_err(|d| anyhow!("working directory {d:?} is not valid UTF-8"))?;
        req.cwd = Some(dir);
    }
    Ok(req)
}

/// `send`: TEXT (plus CR) as one write, or stdin chunk by chunk as it arrives.
async fn send(
    client: &Client,
    session: SessionId,
    text: Option<String>,
    enter: bool,
    from_stdin: bool,
) -> Result<()> {
    let enter = if enter { &b"\r"[..] } else { &b""[..] };
    if from_stdin {
        let mut chunks = stdio::stdin_chunks();
        while let Some(chunk) = chunks.recv().await {
            client.input(session, chunk.context("cannot read stdin")?).await?;
        }
        if !enter.is_empty() {
            client.input(session, Bytes::from_static(enter)).await?;
        }
    } else {
        let mut data = BytesMut::from(text.unwrap_or_default().as_bytes());
        data.extend_from_slice(enter);
        if !data.is_empty() {
            client.input(session, data.freeze()).await?;
        }
    }
    Ok(())
}
