//! ptyd under systemd's protocols, without systemd as PID 1: socket activation through
//! `systemd-socket-activate`, notifications read from a NOTIFY_SOCKET this test binds,
//! a watchdog that stops when the daemon cannot serve, and `systemd-analyze verify` on
//! every unit file.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ipc_proto::{Client, SpawnRequest};
use ptyd_tests::bridge::Bridge;
use ptyd_tests::{bin_path, ptyd_bin, read_to_exit, workspace_root, TIMEOUT};

/// A child killed and reaped on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads notify datagrams until one contains `needle`, or the timeout.
fn wait_notify(sock: &UnixDatagram, needle: &str, timeout: Duration) -> Result<Vec<String>> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(
            deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)),
        ))?;
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let hit = msg.contains(needle);
                seen.push(msg);
                if hit {
                    return Ok(seen);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => return Err(e.into()),
        }
    }
    bail!("no {needle:?} notification within {timeout:?}; saw {seen:?}")
}

fn start_activated(dir: &Path, watchdog: Duration) -> Result<(Guard, PathBuf, UnixDatagram)> {
    let sock = dir.join("ptyd.sock");
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path)?;
    let log = std::fs::File::create(dir.join("ptyd.log"))?;
    let child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&sock)
        .arg("-E")
        .arg(format!("NOTIFY_SOCKET={}", notify_path.display()))
        .arg("-E")
        .arg(format!("WATCHDOG_USEC={}", watchdog.as_micros()))
        .arg("-E")
        .arg("RUST_LOG=info")
        .arg(ptyd_bin()?)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("systemd-socket-activate (package systemd) is needed for this test")?;
    let guard = Guard(child);
    ensure!(
        ptyd_tests::wait_until(TIMEOUT, || sock.exists()),
        "systemd-socket-activate never created {sock:?}"
    );
    Ok((guard, sock, notify))
}

#[tokio::test]
async fn socket_activation_readiness_status_watchdog_and_stop() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let interval = Duration::from_millis(400);
    let (mut daemon, sock, notify) = start_activated(dir.path(), interval)?;
    // The first connection is what makes systemd-socket-activate exec ptyd.
    let client = Client::connect(&sock).await?;
    let notify = tokio::task::spawn_blocking(move || -> Result<UnixDatagram> {
        let seen = wait_notify(&notify, "READY=1", TIMEOUT)?;
        ensure!(seen.iter().any(|m| m.contains("STATUS=0/64 sessions")), "{seen:?}");
        wait_notify(&notify, "WATCHDOG=1", TIMEOUT)?;
        Ok(notify)
    })
    .await??;

    // STATUS follows the pool; children do not inherit systemd's variables.
    let (spawned, mut att) = client
        .spawn_attached(
            SpawnRequest::new(
                "sh",
                ["-c", "echo notify=${NOTIFY_SOCKET:-unset} listen=${LISTEN_FDS:-unset}"],
            ),
            ipc_proto::AttachMode { lossless: true },
        )
        .await?;
    let out = read_to_exit(&mut att, TIMEOUT).await?;
    ensure!(out.text().contains("notify=unset listen=unset"), "{}", out.text());
    let notify = tokio::task::spawn_blocking(move || -> Result<UnixDatagram> {
        wait_notify(&notify, "STATUS=1/64 sessions", TIMEOUT)?;
        wait_notify(&notify, "STATUS=0/64 sessions", TIMEOUT)?;
        Ok(notify)
    })
    .await??;
    let _ = spawned;

    // Stall the request path: with no descriptor left, the daemon cannot accept or
    // connect to itself, so the watchdog pings must stop.
    let pid = daemon.0.id();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    // Only the soft limit moves, so it can be put back without CAP_SYS_RESOURCE.
    let limit = |soft: String| {
        Command::new("prlimit")
            .args(["--pid", &pid.to_string(), &format!("--nofile={soft}:")])
            .status()
    };
    let original = soft_nofile(pid)?;
    ensure!(limit(fds.to_string())?.success(), "prlimit failed");
    let notify = tokio::task::spawn_blocking(move || -> Result<UnixDatagram> {
        // Drain a ping that may have been in flight, then expect silence for 3 intervals.
        let _ = wait_notify(&notify, "WATCHDOG=1", interval);
        let silent = wait_notify(&notify, "WATCHDOG=1", interval * 3);
        ensure!(
            silent.is_err(),
            "watchdog kept pinging while the daemon could not serve: {silent:?}"
        );
        Ok(notify)
    })
    .await??;
    ensure!(limit(original)?.success(), "prlimit failed");
    let notify = tokio::task::spawn_blocking(move || -> Result<UnixDatagram> {
        wait_notify(&notify, "WATCHDOG=1", TIMEOUT)?;
        Ok(notify)
    })
    .await??;

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    tokio::task::spawn_blocking(move || wait_notify(&notify, "STOPPING=1", TIMEOUT)).await??;
    let status = daemon.0.wait()?;
    ensure!(status.success(), "ptyd exited with {status:?}");
    // The socket belongs to whoever passed it: ptyd must not unlink it.
    ensure!(sock.exists(), "ptyd removed a socket it did not create");
    Ok(())
}

/// The soft "Max open files" limit of `pid`, as prlimit accepts it.
fn soft_nofile(pid: u32) -> Result<String> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line =
        limits.lines().find(|l| l.starts_with("Max open files")).context("no open files limit")?;
    line.split_whitespace().nth(3).map(str::to_string).context("malformed limits line")
}

/// Copies the unit files, points ExecStart at the built binaries, and verifies them.
fn verify_units(units: &[&str], user: bool) -> Result<()> {
    let src = workspace_root().join("systemd");
    let dir = tempfile::tempdir()?;
    let mut paths = Vec::new();
    for unit in units {
        let text =
            std::fs::read_to_string(src.join(unit)).with_context(|| format!("reading {unit}"))?;
        let text = text
            .replace("/usr/local/bin/ptyd-bridge", &bin_path("ptyd-bridge")?.display().to_string())
            .replace("/usr/local/bin/ptyctl", &bin_path("ptyctl")?.display().to_string())
            .replace("/usr/local/bin/ptyd", &ptyd_bin()?.display().to_string());
        let name = Path::new(unit).file_name().context("unit name")?;
        let path = dir.path().join(name);
        std::fs::write(&path, text)?;
        paths.push(path);
    }
    let runtime = dir.path().join("runtime");
    std::fs::create_dir(&runtime)?;
    let mut cmd = Command::new("systemd-analyze");
    if user {
        cmd.arg("--user").env("XDG_RUNTIME_DIR", &runtime);
    }
    let out = cmd
        .arg("verify")
        .args(&paths)
        .output()
        .context("systemd-analyze (package systemd) is needed")?;
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // verify exits 0 on some problems it only warns about, so any output is a failure.
    ensure!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {:?}\n{said}",
        out.status
    );
    Ok(())
}

#[test]
fn system_units_verify() -> Result<()> {
    verify_units(&["ptyd.socket", "ptyd.service", "ptyd-bridge.service"], false)
}

#[test]
fn no_shipped_unit_puts_a_token_on_a_command_line() -> Result<()> {
    let dir = workspace_root().join("systemd");
    for unit in
        ["ptyd-bridge.service", "user/ptyd-bridge.service", "ptyd.service", "user/ptyd.service"]
    {
        let text = std::fs::read_to_string(dir.join(unit))?;
        for line in text.lines().filter(|l| l.starts_with("Exec")) {
            ensure!(!line.contains("--token") && !line.contains("TOKEN="), "{unit}: {line}");
        }
        ensure!(!text.contains("Environment=PTYD_BRIDGE_TOKEN="), "{unit} sets the token");
    }
    let system = std::fs::read_to_string(dir.join("ptyd-bridge.service"))?;
    ensure!(system.contains("LoadCredential=token:"), "the system bridge loads no credential");
    Ok(())
}

#[test]
fn user_units_verify() -> Result<()> {
    verify_units(&["user/ptyd.socket", "user/ptyd.service", "user/ptyd-bridge.service"], true)
}

/// Lowers `pid`'s soft descriptor limit to what it holds now, so it can neither accept nor
/// connect; returns the original limit for [`set_soft_nofile`].
fn starve_fds(pid: u32) -> Result<String> {
    let original = soft_nofile(pid)?;
    let held = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    set_soft_nofile(pid, &held.to_string())?;
    Ok(original)
}

/// Sets only the soft limit, which needs no CAP_SYS_RESOURCE to put back.
fn set_soft_nofile(pid: u32, soft: &str) -> Result<()> {
    let status = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={soft}:")])
        .status()
        .context("prlimit (package util-linux) is needed")?;
    ensure!(status.success(), "prlimit failed: {status}");
    Ok(())
}

/// The bridge under Type=notify: READY=1 with a status naming the link to ptyd, watchdog
/// pings only while it answers its own /health, STOPPING=1 at SIGTERM.
#[tokio::test]
async fn bridge_readiness_status_watchdog_and_stop() -> Result<()> {
    let daemon = ptyd_tests::Daemon::start(ptyd_tests::DaemonOptions::new()).await?;
    let dir = tempfile::tempdir()?;
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path)?;
    let interval = Duration::from_millis(400);
    let env = [
        ("NOTIFY_SOCKET", notify_path.to_str().context("path")?),
        ("WATCHDOG_USEC", &interval.as_micros().to_string()),
    ];
    let mut bridge = Bridge::start_with_env(daemon.socket(), &["--no-spawn-daemon"], &env).await?;
    let pid = bridge.pid();
    let notify = tokio::task::spawn_blocking(move || -> Result<UnixDatagram> {
        let seen = wait_notify(&notify, "READY=1", TIMEOUT)?;
        ensure!(
            seen.iter()
                .any(|m| m.contains("STATUS=0 active, 0 disconnected, 0 detached terminals")
                    && m.contains("ptyd reachable")),
            "{seen:?}"
        );
        wait_notify(&notify, "WATCHDOG=1", TIMEOUT)?;
        Ok(notify)
    })
    .await??;

    // A terminal shows up in STATUS= (Disconnected until a socket claims it).
    bridge.create("").await?;
    let notify = tokio::task::spawn_blocking(move || -> Result<UnixDatagram> {
        wait_notify(&notify, "1 disconnected, 0 detached terminals", TIMEOUT)?;
        Ok(notify)
    })
    .await??;

    let original = starve_fds(pid)?;
    let notify = tokio::task::spawn_blocking(move || -> Result<UnixDatagram> {
        let _ = wait_notify(&notify, "WATCHDOG=1", interval);
        let silent = wait_notify(&notify, "WATCHDOG=1", interval * 3);
        ensure!(silent.is_err(), "watchdog kept pinging while HTTP could not be served");
        Ok(notify)
    })
    .await??;
    set_soft_nofile(pid, &original)?;
    let notify = tokio::task::spawn_blocking(move || -> Result<UnixDatagram> {
        wait_notify(&notify, "WATCHDOG=1", TIMEOUT)?;
        Ok(notify)
    })
    .await??;

    bridge.signal(nix::sys::signal::Signal::SIGTERM)?;
    tokio::task::spawn_blocking(move || wait_notify(&notify, "STOPPING=1", TIMEOUT)).await??;
    let status = bridge.wait_exit(TIMEOUT).await?;
    ensure!(status.success(), "ptyd-bridge exited with {status:?}");
    Ok(())
}
