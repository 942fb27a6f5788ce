//! `doctor`: checks the socket, the daemon and the limits it runs under, one line each.
//!
//! Every check prints `ok`, `warn` or `FAIL` and never stops ptyctl: facts that cannot be
//! read (another user's `/proc`, a missing file) are warnings, not crashes. Only the
//! checks that need the daemon are skipped when it cannot be reached.

use std::fmt::Display;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

use ipc_proto::{Client, ClientError, ErrorCode, IpcError, PROTOCOL_VERSION};
use nix::unistd::geteuid;

/// A daemon that accepts the connection but never answers the handshake is broken too.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A child that just exited stays a zombie until the daemon's reaper collects it: only
/// zombies still there after this long count.
const ZOMBIE_RECHECK: Duration = Duration::from_millis(500);
/// File descriptors one session costs the daemon (it holds three handles on each PTY
/// master)…
const FDS_PER_SESSION: u64 = 3;
/// …and what the daemon needs besides (listener, connections, logs, runtime).
const FDS_BASE: u64 = 64;

/// How `doctor` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// A line per check as it is made, then a summary.
    #[default]
    Text,
    /// One JSON object once every check is made.
    Json,
}

/// Runs every check against the socket at `path`; returns the exit status (1 if any
/// check failed).
pub async fn run(path: &Path, format: Format) -> i32 {
    let mut report = Report { format, ..Report::default() };
    check(path, &mut report).await;
    match format {
        Format::Text => {
            println!("summary: {} ok, {} warn, {} FAIL", report.ok, report.warn, report.fail)
        }
        Format::Json => {
            let out = serde_json::json!({
                "socket": path,
                "checks": report.checks,
                "summary": {"ok": report.ok, "warn": report.warn, "fail": report.fail},
            });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
    }
    if report.fail > 0 {
        1
    } else {
        0
    }
}

async fn check(path: &Path, report: &mut Report) {
    report.check = "socket";
    if !socket_file(path, report) {
        return;
    }
    report.check = "daemon";
    let Some(client) = handshake(path, report).await else { return };
    let pid = client.daemon().pid;
    report.check = "pool";
    if let Some(capacity) = pool(&client, report).await {
        report.check = "open_files";
        open_files(pid, capacity, report);
    }
    report.check = "ptys";
    ptys(report);
    report.check = "zombies";
    zombies(pid, report).await;
}

/// One line of the report: which check, how it went, what it found, what to do.
#[derive(Debug, serde::Serialize)]
struct Line {
    check: &'static str,
    status: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hints: Vec<String>,
}

/// Counts the checks and prints (or, for JSON, keeps) their lines.
#[derive(Default, Debug)]
struct Report {
    format: Format,
    /// The check the lines now made belong to.
    check: &'static str,
    checks: Vec<Line>,
    ok: usize,
    warn: usize,
    fail: usize,
}

impl Report {
    fn line(&mut self, status: &'static str, label: &str, msg: impl Display) {
        let message = msg.to_string();
        if self.format == Format::Text {
            println!("{label} {message}");
        }
        self.checks.push(Line { check: self.check, status, message, hints: Vec::new() });
    }

    fn ok(&mut self, msg: impl Display) {
        self.ok += 1;
        self.line("ok", "ok  ", msg);
    }

    fn warn(&mut self, msg: impl Display) {
        self.warn += 1;
        self.line("warn", "warn", msg);
    }

    fn fail(&mut self, msg: impl Display) {
        self.fail += 1;
        self.line("fail", "FAIL", msg);
    }

    /// What to do about the line above; not a check of its own.
    fn hint(&mut self, msg: impl Display) {
        if self.format == Format::Text {
            println!("     {msg}");
        }
        if let Some(last) = self.checks.last_mut() {
            last.hints.push(msg.to_string());
        }
    }
}

/// The socket file and its directory; false when there is no socket to connect to.
fn socket_file(path: &Path, report: &mut Report) -> bool {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            report.fail(format!("socket {} does not exist: no daemon serves it", path.display()));
            report.hint(start_hint(path));
            return false;
        }
        Err(e) => {
            report.fail(format!("cannot inspect socket {}: {e}", path.display()));
            return false;
        }
    };
    if !meta.file_type().is_socket() {
        report.fail(format!("{} exists but is {}, not a socket", path.display(), kind(&meta)));
        return false;
    }
    report.ok(format!("socket {} exists and is a Unix socket", path.display()));
    // Group or others on the socket means the daemon's peer-credential check is the only
    // gate left; on the directory, that others could replace the socket with their own.
    permissions(report, "socket", path, &meta, 0o600);
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    match fs::metadata(dir) {
        Ok(meta) => permissions(report, "directory", dir, &meta, 0o700),
        Err(e) => report.warn(format!("directory {}: cannot read it ({e})", dir.display())),
    }
    true
}

/// One line: the mode and the owner of a file, against `expected` and the current user.
fn permissions(report: &mut Report, what: &str, path: &Path, meta: &Metadata, expected: u32) {
    let mode = meta.mode() & 0o7777;
    let me = geteuid().as_raw();
    let owner = if meta.uid() == me { "you".to_string() } else { format!("uid {}", meta.uid()) };
    let line = format!("{what} {} has mode {mode:04o}, owner {owner}", path.display());
    let mut problems = Vec::new();
    if mode & 0o777 != expected {
        problems.push(format!("expected mode {expected:04o}"));
    }
    if meta.uid() != me {
        problems.push(format!("expected owner you (uid {me})"));
    }
    if problems.is_empty() {
        report.ok(line);
    } else {
        report.warn(format!("{line} ({})", problems.join(", ")));
    }
}

fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// How to start a daemon on `path`.
fn start_hint(path: &Path) -> String {
    if path == ipc_proto::default_socket_path() {
        "start it with: ptyd   (or: systemctl --user start ptyd.socket)".to_string()
    } else {
        format!("start it with: ptyd --socket {}", path.display())
    }
}

/// Connects and shakes hands; reports the daemon's version, pid and protocol.
async fn handshake(path: &Path, report: &mut Report) -> Option<Client> {
    let client = match tokio::time::timeout(HANDSHAKE_TIMEOUT, crate::connect_to(path)).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => {
            let failure = e.chain().find_map(|e| e.downcast_ref::<ClientError>());
            if failure.and_then(ClientError::code) == Some(ErrorCode::VersionMismatch) {
                report.fail(format!("protocol: the daemon refused ptyctl's version: {e:#}"));
                report.hint("use the ptyctl that comes with the running ptyd");
            } else {
                report.fail(format!("daemon not reachable: {e:#}"));
                // The socket file was there a moment ago (checked above), so ECONNREFUSED
                // means it outlived its daemon, e.g. one killed with SIGKILL.
                let refused = matches!(
                    failure,
                    Some(ClientError::Ipc(IpcError::Connect { cause, .. }))
                        if cause.kind() == io::ErrorKind::ConnectionRefused
                );
                if refused {
                    report.hint("nothing listens: the daemon that made this socket is gone");
                }
                report.hint(start_hint(path));
            }
            return None;
        }
        Err(_) => {
            report.fail(format!(
                "daemon at {} accepted the connection but did not answer the handshake within {}",
                path.display(),
                humantime::format_duration(HANDSHAKE_TIMEOUT)
            ));
            report.hint("it may be stuck: see its log (journalctl --user -u ptyd, or its stderr)");
            return None;
        }
    };
    let hello = client.daemon();
    let mut line = format!("daemon reachable: ptyd {}, pid {}", hello.daemon_version, hello.pid);
    let mine = env!("CARGO_PKG_VERSION");
    if hello.daemon_version != mine {
        line.push_str(&format!(" (this ptyctl is {mine})"));
    }
    report.ok(line);
    if hello.protocol_version == PROTOCOL_VERSION {
        report.ok(format!("protocol version {PROTOCOL_VERSION}"));
    } else {
        report.warn(format!(
            "protocol: the daemon speaks version {}, ptyctl {PROTOCOL_VERSION}",
            hello.protocol_version
        ));
    }
    Some(client)
}

/// Pool usage; returns the capacity.
async fn pool(client: &Client, report: &mut Report) -> Option<usize> {
    let list = match client.list().await {
        Ok(list) => list,
        Err(e) => {
            report.fail(format!("pool: cannot list sessions: {e}"));
            return None;
        }
    };
    let line = format!("pool: {}/{} sessions running", list.active, list.capacity);
    if list.active * 5 >= list.capacity * 4 {
        report.warn(format!("{line} (80% or more: spawns fail once it is full)"));
    } else {
        report.ok(line);
    }
    Some(list.capacity)
}

/// The daemon's soft open-file limit against what its capacity needs.
fn open_files(pid: u32, capacity: usize, report: &mut Report) {
    let file = format!("/proc/{pid}/limits");
    let limit = match fs::read_to_string(&file) {
        Ok(text) => max_open_files(&text),
        Err(e) => {
            report.warn(format!("open files: cannot read {file} ({e})"));
            return;
        }
    };
    let Some(limit) = limit else {
        report.warn(format!("open files: no 'Max open files' line in {file}"));
        return;
    };
    // Counting another user's fds is not allowed; the number is a bonus.
    let open = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| format!(", {} open now", dir.count()))
        .unwrap_or_default();
    let needed = capacity as u64 * FDS_PER_SESSION + FDS_BASE;
    match limit {
        Limit::Unlimited => report.ok(format!("open files: no limit{open}")),
        Limit::Max(max) if max < needed => {
            report.warn(format!(
                "open files: limit {max} is below the ~{needed} that {capacity} sessions need \
                 ({FDS_PER_SESSION} each + {FDS_BASE}){open}"
            ));
            report.hint("raise it: LimitNOFILE= in the unit, or ulimit -n before starting ptyd");
        }
        Limit::Max(max) => report.ok(format!(
            "open files: limit {max}, enough for {capacity} sessions (~{needed}){open}"
        )),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Limit {
    Max(u64),
    Unlimited,
}

/// The soft limit on the `Max open files` line of a `/proc/<pid>/limits` text.
fn max_open_files(limits: &str) -> Option<Limit> {
    let line = limits.lines().find_map(|l| l.strip_prefix("Max open files"))?;
    match line.split_whitespace().next()? {
        "unlimited" => Some(Limit::Unlimited),
        soft => soft.parse().ok().map(Limit::Max),
    }
}

/// Pseudo-terminals in use on the whole system against the kernel's maximum.
fn ptys(report: &mut Report) {
    let read = |name: &str| -> Result<u64, String> {
        let file = format!("/proc/sys/kernel/pty/{name}");
        let text = fs::read_to_string(&file).map_err(|e| format!("cannot read {file} ({e})"))?;
        text.trim().parse().map_err(|_| format!("cannot parse {file}"))
    };
    match (read("nr"), read("max")) {
        (Ok(nr), Ok(max)) => {
            let line = format!("pseudo-terminals: {nr} of {max} in use system-wide");
            if nr * 5 >= max * 4 {
                report.warn(format!("{line} (80% or more: new sessions may fail to get one)"));
            } else {
                report.ok(line);
            }
        }
        (Err(e), _) | (_, Err(e)) => report.warn(format!("pseudo-terminals: {e}")),
    }
}

/// Zombie children of the daemon that outlast a short recheck: its reaper is not working.
async fn zombies(pid: u32, report: &mut Report) {
    // A daemon in another pid namespace, or hidden by hidepid, cannot be inspected.
    if let Err(e) = fs::metadata(format!("/proc/{pid}/stat")) {
        report.warn(format!("zombie children: cannot read /proc/{pid}/stat ({e})"));
        return;
    }
    let first = match zombie_children(pid) {
        Ok(found) => found,
        Err(e) => {
            report.warn(format!("zombie children: cannot read /proc ({e})"));
            return;
        }
    };
    if first.is_empty() {
        report.ok("no zombie children");
        return;
    }
    tokio::time::sleep(ZOMBIE_RECHECK).await;
    let lasting: Vec<_> = zombie_children(pid)
        .unwrap_or_default()
        .into_iter()
        .filter(|z| first.contains(z))
        .collect();
    if lasting.is_empty() {
        report.ok(format!("no lasting zombie children ({} reaped during the check)", first.len()));
        return;
    }
    let list = lasting.iter().map(|(pid, comm)| format!("{pid} ({comm})")).collect::<Vec<_>>();
    report.fail(format!(
        "{} zombie children of ptyd not reaped after {}: {}",
        lasting.len(),
        humantime::format_duration(ZOMBIE_RECHECK),
        list.join(", ")
    ));
    report.hint("the daemon's reaper is not collecting exits; its log may say why");
}

/// `(pid, comm)` of the zombies whose parent is `parent`.
fn zombie_children(parent: u32) -> io::Result<Vec<(u32, String)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let Some(pid) = entry.ok().and_then(|e| e.file_name().to_str()?.parse::<u32>().ok()) else {
            continue;
        };
        // Processes end while the scan runs, and some may be hidden: skip those.
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        if let Some((comm, 'Z', ppid)) = parse_stat(&text) {
            if ppid == parent {
                found.push((pid, comm));
            }
        }
    }
    Ok(found)
}

/// `(comm, state, ppid)` from a `/proc/<pid>/stat` text. The name may hold spaces and
/// parentheses, so it ends at the last `)`.
fn parse_stat(text: &str) -> Option<(String, char, u32)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_file_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max processes             127431               127431               processes\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(Limit::Max(1024)));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(max_open_files(unlimited), Some(Limit::Unlimited));
        assert_eq!(max_open_files("Max processes 10 10 processes\n"), None);
    }

    #[test]
    fn stat_lines() {
        assert_eq!(
            parse_stat("4242 (my (odd) name) Z 17 4242 4242 0"),
            Some(("my (odd) name".to_string(), 'Z', 17))
        );
        assert_eq!(parse_stat("garbage"), None);
        let me = parse_stat(&fs::read_to_string("/proc/self/stat").unwrap()).unwrap();
        assert_eq!(me.2, nix::unistd::getppid().as_raw() as u32);
    }
}
