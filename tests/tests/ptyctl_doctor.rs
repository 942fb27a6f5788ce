//! `ptyctl doctor` against a healthy daemon, a busy one, a missing socket, a stale socket
//! and a socket with loose permissions.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{ensure, Context, Result};
use ptyd_tests::{wait_until, Daemon, DaemonOptions, TIMEOUT};

/// Runs `cmd` (which must end on its own; doctor's checks are bounded) and returns its
/// exit code and stdout.
fn doctor(mut cmd: Command) -> Result<(Option<i32>, String)> {
    let Output { status, stdout, stderr } =
        cmd.stdin(Stdio::null()).output().context("cannot run ptyctl doctor")?;
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    eprintln!("ptyctl doctor: {status}\n{stdout}{}", String::from_utf8_lossy(&stderr));
    Ok((status.code(), stdout))
}

/// `ptyctl --socket <path> doctor` with no daemon behind it.
fn doctor_at(path: &Path) -> Result<(Option<i32>, String)> {
    let mut cmd = Command::new(ptyd_tests::ptyctl_bin()?);
    cmd.arg("--socket").arg(path).arg("doctor").env_remove("PTYD_SOCKET");
    doctor(cmd)
}

fn lines_starting<'a>(out: &'a str, tag: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.split_whitespace().next() == Some(tag)).collect()
}

#[tokio::test]
async fn healthy_daemon_passes() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    // ptyd makes the socket's directory 0700 only when it creates it; the test's temporary
    // directory already existed, with the umask's mode.
    std::fs::set_permissions(daemon.dir(), std::fs::Permissions::from_mode(0o700))?;
    let (code, out) = doctor(daemon.ptyctl(["doctor"]))?;
    ensure!(code == Some(0), "{out}");
    ensure!(lines_starting(&out, "FAIL").is_empty(), "{out}");
    let ok = lines_starting(&out, "ok");
    let pid = format!("pid {}", daemon.pid());
    for needle in
        ["exists and is a Unix socket", "mode 0600", "mode 0700", &pid, "protocol version"]
    {
        ensure!(ok.iter().any(|l| l.contains(needle)), "no ok line with {needle:?}:\n{out}");
    }
    for needle in ["pool: 0/", "open files", "pseudo-terminals", "zombie"] {
        ensure!(out.contains(needle), "no line about {needle:?}:\n{out}");
    }
    ensure!(out.lines().last().is_some_and(|l| l.starts_with("summary:")), "{out}");
    Ok(())
}

#[tokio::test]
async fn a_nearly_full_pool_warns_without_failing() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().capacity(2)).await?;
    for _ in 0..2 {
        let out = daemon.ptyctl(["spawn", "--", "sleep", "60"]).output()?;
        ensure!(out.status.success(), "{out:?}");
    }
    let (code, out) = doctor(daemon.ptyctl(["doctor"]))?;
    ensure!(code == Some(0), "warnings alone do not fail:\n{out}");
    let warn = lines_starting(&out, "warn");
    ensure!(warn.iter().any(|l| l.contains("pool: 2/2 sessions running")), "{out}");
    Ok(())
}

#[tokio::test]
async fn loose_permissions_warn() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    std::fs::set_permissions(daemon.socket(), std::fs::Permissions::from_mode(0o666))?;
    std::fs::set_permissions(daemon.dir(), std::fs::Permissions::from_mode(0o755))?;
    let (code, out) = doctor(daemon.ptyctl(["doctor"]))?;
    ensure!(code == Some(0), "{out}");
    let warn = lines_starting(&out, "warn");
    ensure!(warn.iter().any(|l| l.contains("mode 0666") && l.contains("0600")), "{out}");
    ensure!(warn.iter().any(|l| l.contains("mode 0755") && l.contains("0700")), "{out}");
    Ok(())
}

#[test]
fn missing_socket_fails_with_a_hint() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ptyd.sock");
    let (code, out) = doctor_at(&path)?;
    ensure!(code == Some(1), "{out}");
    let fail = lines_starting(&out, "FAIL");
    ensure!(fail.iter().any(|l| l.contains("does not exist")), "{out}");
    ensure!(out.contains("start it with: ptyd --socket"), "{out}");
    ensure!(!out.contains("nothing listens"), "no socket file is not a stale one:\n{out}");
    Ok(())
}

#[test]
fn stale_socket_fails_as_unreachable() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ptyd.sock");
    // A socket file nobody listens on, like one left by a daemon killed with SIGKILL.
    drop(std::os::unix::net::UnixListener::bind(&path)?);
    ensure!(wait_until(TIMEOUT, || path.exists()));
    let (code, out) = doctor_at(&path)?;
    ensure!(code == Some(1), "{out}");
    let fail = lines_starting(&out, "FAIL");
    ensure!(
        fail.iter().any(|l| l.contains("daemon not reachable") && l.contains("Connection refused")),
        "{out}"
    );
    // ECONNREFUSED on a socket file that exists: the hint that says the daemon is gone.
    let hint = "     nothing listens: the daemon that made this socket is gone";
    ensure!(out.lines().any(|l| l == hint), "{out}");
    ensure!(out.contains("start it with"), "{out}");
    Ok(())
}

#[test]
fn a_file_that_is_not_a_socket_fails() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ptyd.sock");
    std::fs::write(&path, b"not a socket")?;
    let (code, out) = doctor_at(&path)?;
    ensure!(code == Some(1), "{out}");
    ensure!(lines_starting(&out, "FAIL").iter().any(|l| l.contains("not a socket")), "{out}");
    Ok(())
}

#[tokio::test]
async fn json_gives_the_same_checks_as_one_object() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    std::fs::set_permissions(daemon.dir(), std::fs::Permissions::from_mode(0o700))?;
    let (code, out) = doctor(daemon.ptyctl(["doctor", "--json"]))?;
    ensure!(code == Some(0), "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).context("one JSON object")?;
    let checks = json["checks"].as_array().context("checks")?;
    let names: Vec<_> = checks.iter().filter_map(|c| c["check"].as_str()).collect();
    for name in ["socket", "daemon", "pool", "open_files", "ptys", "zombies"] {
        ensure!(names.contains(&name), "no {name} check: {out}");
    }
    ensure!(checks.iter().all(|c| c["status"] != "fail"), "{out}");
    ensure!(json["summary"]["fail"] == 0 && json["summary"]["ok"].as_u64() > Some(3), "{out}");

    let dir = tempfile::tempdir()?;
    let mut cmd = std::process::Command::new(ptyd_tests::ptyctl_bin()?);
    cmd.arg("--socket").arg(dir.path().join("ptyd.sock")).args(["doctor", "--json"]);
    cmd.env_remove("PTYD_SOCKET");
    let (code, out) = doctor(cmd)?;
    let json: serde_json::Value = serde_json::from_str(&out)?;
    ensure!(code == Some(1) && json["summary"]["fail"] == 1, "{out}");
    let failed = &json["checks"][0];
    ensure!(failed["check"] == "socket" && failed["status"] == "fail", "{out}");
    ensure!(failed["hints"][0].as_str().is_some_and(|h| h.contains("ptyd --socket")), "{out}");
    Ok(())
}
