//! The socket's permissions are not the only guard: a peer whose credentials are not
//! the daemon's user, root or a member of `--allow-group` is refused by SO_PEERCRED even
//! when the socket file is world-writable. The test runs as root and connects as
//! `nobody` through `setpriv`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ipc_proto::SpawnRequest;
use ptyd_tests::outsider::{
    executable_by_others, open_up, outsider_uid, ptyctl_as_outsider, require_root, setpriv,
    OUTSIDER, OUTSIDER_GROUP,
};
use ptyd_tests::{Daemon, DaemonOptions, TIMEOUT};

/// `ptyctl ls` as the outsider.
async fn ls_as_outsider(ptyctl: &Path, daemon: &Daemon) -> Result<(u32, Output)> {
    ptyctl_as_outsider(ptyctl, daemon, &["ls"]).await
}

/// Refused `ptyctl ls` runs in a row: the refusal races the client's hello (see
/// `a_refused_client_that_sends_hello_is_still_told_why`), so one run is not enough to
/// show that every refused client learns why.
const REFUSED_RUNS: usize = 20;

#[tokio::test]
async fn a_foreign_uid_is_refused_even_with_an_open_socket() -> Result<()> {
    require_root()?;
    setpriv()?;
    let uid = outsider_uid()?;
    let mut daemon = Daemon::start(DaemonOptions::new()).await?;
    let ptyctl = open_up(&daemon)?;

    let mut untold = Vec::new();
    for run in 1..=REFUSED_RUNS {
        let (pid, out) = ls_as_outsider(&ptyctl, &daemon).await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            !out.status.success(),
            "run {run}: ptyctl ls as {OUTSIDER} should fail, got {:?}; stdout: {stdout}",
            out.status
        );
        ensure!(stdout.trim().is_empty(), "run {run}: nothing should be listed: {stdout}");
        daemon
            .wait_for_log(&format!("refused peer uid {uid} pid {pid}"), TIMEOUT)
            .await
            .with_context(|| format!("run {run}: the refusal should be logged with uid and pid"))?;
        let refusal = format!("peer uid {uid} (pid {pid}) is not allowed to use this ptyd");
        if !stderr.contains(&refusal) {
            untold
                .push(format!("run {run}: expected {refusal:?} on stderr, got: {}", stderr.trim()));
        }
    }
    ensure!(
        untold.is_empty(),
        "{} of {REFUSED_RUNS} refused ptyctl runs were not told why:\n{}",
        untold.len(),
        untold.join("\n")
    );

    // The refusal cost the daemon nothing.
    ensure!(daemon.try_wait()?.is_none(), "ptyd exited after refusing a peer");
    let client = daemon.try_client().await?;
    tokio::time::timeout(Duration::from_secs(5), client.list()).await??;
    Ok(())
}

#[tokio::test]
async fn a_member_of_the_allowed_group_is_served() -> Result<()> {
    require_root()?;
    setpriv()?;
    let uid = outsider_uid()?;
    let daemon = Daemon::start(DaemonOptions::new().allow_group(OUTSIDER_GROUP)).await?;
    let ptyctl = open_up(&daemon)?;
    let client = daemon.try_client().await?;
    let spawned = client.spawn(SpawnRequest::new("sleep", ["30"])).await?;

    let (pid, out) = ls_as_outsider(&ptyctl, &daemon).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "ptyctl ls as {OUTSIDER}:{OUTSIDER_GROUP} should succeed with --allow-group, got \
         {:?}; stderr: {stderr}",
        out.status
    );
    ensure!(
        stdout.contains(&spawned.session.to_string()),
        "the listing should show the running session {}: {stdout}",
        spawned.session
    );
    ensure!(
        !daemon.log().contains(&format!("refused peer uid {uid} pid {pid}")),
        "an allowed peer was logged as refused"
    );
    client.kill(spawned.session, None).await?;
    Ok(())
}

/// Connects as nobody, waits until the daemon has answered the connection (and, as it
/// does today, closed it), only then sends hello, and prints what happened: a client is
/// free to write its hello whenever it likes, and the refusal must still reach it.
const LATE_HELLO_PY: &str = r#"
import json, select, socket, struct, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(sys.argv[1])
poll = select.poll()
poll.register(sock, select.POLLIN | select.POLLRDHUP)
# Until the daemon shuts its side (POLLRDHUP); a daemon that keeps it open until it has
# read the hello is fine too, hence the bounded wait.
deadline = 2000
while deadline > 0 and not any(ev & select.POLLRDHUP for _, ev in poll.poll(100)):
    deadline -= 100
head = json.dumps({"id": 1, "type": "hello", "protocol_version": 1, "client": "late"}).encode()
try:
    sock.sendall(struct.pack(">II", 4 + len(head), len(head)) + head)
    print("hello sent")
except OSError as e:
    print(f"hello failed: {e}")
data = b""
while True:
    try:
        chunk = sock.recv(65536)
    except OSError as e:
        print(f"recv failed: {e}")
        break
    if not chunk:
        break
    data += chunk
if len(data) >= 8:
    frame_len, header_len = struct.unpack(">II", data[:8])
    print("reply " + data[8:8 + header_len].decode())
"#;

/// A `python3` that `nobody` can run (pyenv shims under /root are not).
fn python_for_outsider() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("python3"))
        .filter_map(|p| p.canonicalize().ok())
        .find(|p| p.is_file() && executable_by_others(p))
        .context("no python3 that the nobody user can execute")
}

#[tokio::test]
async fn a_refused_client_that_sends_hello_is_still_told_why() -> Result<()> {
    require_root()?;
    let uid = outsider_uid()?;
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    open_up(&daemon)?;
    let script = daemon.dir().join("late_hello.py");
    std::fs::write(&script, LATE_HELLO_PY)?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644))?;

    let child = tokio::process::Command::new(setpriv()?)
        .arg(format!("--reuid={OUTSIDER}"))
        .arg(format!("--regid={OUTSIDER_GROUP}"))
        .arg("--clear-groups")
        .arg(python_for_outsider()?)
        .arg(&script)
        .arg(daemon.socket())
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("no pid")?;
    let out = tokio::time::timeout(TIMEOUT, child.wait_with_output()).await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "the script failed: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let refusal = format!("peer uid {uid} (pid {pid}) is not allowed to use this ptyd");
    ensure!(
        stdout.contains("hello sent")
            && stdout.contains("\"code\":\"PermissionDenied\"")
            && stdout.contains(&refusal),
        "a refused client's hello must not fail before it can read the refusal \
         (expected \"hello sent\" and {refusal:?}); the client saw:\n{stdout}"
    );
    Ok(())
}
