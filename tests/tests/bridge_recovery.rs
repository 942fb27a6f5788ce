//! Surviving the neighbours: a bridge killed with SIGKILL (or stopped with SIGTERM) and
//! restarted recovers its terminals from ptyd; a ptyd that dies and comes back is found
//! again without restarting the bridge.

use anyhow::{ensure, Result};
use nix::sys::signal::Signal;
use ptyd_tests::bridge::Bridge;
use ptyd_tests::{Daemon, DaemonOptions, TIMEOUT};

#[tokio::test]
async fn a_restarted_bridge_recovers_its_terminals_and_the_browser_resumes() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let args = ["--grace", "20s"];
    let mut first = Bridge::start(daemon.socket(), &args).await?;
    let id = first.create("").await?;
    let mut ws = first.connect(&id, None).await?;
    ws.send_input(b"echo be''fore\r").await?;
    ws.read_until("before", TIMEOUT).await?;
    let resume_at = ws.offset;
    first.kill9()?;

    let second = Bridge::start(daemon.socket(), &args).await?;
    let t = second.terminal(&id).await?;
    ensure!(t["status"] == "Disconnected", "{t}");
    second.wait_for_log(&format!("Recovered terminal {id} as Disconnected"), TIMEOUT).await?;
    let mut ws = second.connect(&id, Some(resume_at)).await?;
    ensure!(ws.hello["offset"] == resume_at && ws.hello["dropped"] == 0, "{}", ws.hello);
    ws.send_input(b"echo af''ter\r").await?;
    ws.read_until("after", TIMEOUT).await?;
    second.wait_status(&id, "Active", TIMEOUT).await?;
    // A terminal that was not the bridge's is not adopted.
    let client = daemon.client().await;
    let other = client.spawn(ipc_proto::SpawnRequest::new("sleep", ["600"])).await?;
    let third = Bridge::start(daemon.socket(), &args).await?;
    ensure!(third.terminal(&other.session.to_string()).await.is_err(), "foreign session adopted");
    client.kill(other.session, None).await?;
    Ok(())
}

#[tokio::test]
async fn ptyd_dying_and_coming_back_is_followed_without_a_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("ptyd.sock");
    let mut first = Daemon::start(DaemonOptions::new().socket(&socket)).await?;
    let bridge = Bridge::start(&socket, &["--reconnect-max", "300ms", "--grace", "20s"]).await?;
    ensure!(bridge.get("/readyz").await?.status == 200);
    let old = bridge.create("").await?;
    let mut ws = bridge.connect(&old, None).await?;
    ws.send_input(b"echo on''e\r").await?;
    ws.read_until("one", TIMEOUT).await?;

    first.signal(Signal::SIGKILL)?;
    first.wait_exit(TIMEOUT).await?;
    let (code, reason) = ws.expect_close(TIMEOUT).await?;
    ensure!(code == 1011 && reason.starts_with("IpcError: "), "{code} {reason}");
    let ok = ptyd_tests::wait_until_with(TIMEOUT, async || {
        bridge.get("/readyz").await.is_ok_and(|r| r.status == 503)
    })
    .await;
    ensure!(ok, "readyz stayed 200 without ptyd");
    let r = bridge.get("/readyz").await?;
    ensure!(r.json()?["error"] == "IpcError", "{r:?}");
    let r = bridge.post("/api/terminals", "").await?;
    ensure!(r.status == 503, "{r:?}");
    let body = r.json()?;
    ensure!(body["error"] == "IpcError", "{body}");
    ensure!(body["message"].as_str().is_some_and(|m| m.starts_with("IPC error: ")), "{body}");

    let second = Daemon::start(DaemonOptions::new().socket(&socket)).await?;
    let ok = ptyd_tests::wait_until_with(TIMEOUT, async || {
        bridge.get("/readyz").await.is_ok_and(|r| r.status == 200)
    })
    .await;
    ensure!(ok, "readyz never came back; log:\n{}", bridge.log_tail());
    let id = bridge.create("").await?;
    let mut ws = bridge.connect(&id, None).await?;
    ws.send_input(b"echo tw''o\r").await?;
    ws.read_until("two", TIMEOUT).await?;
    // The terminal of the dead ptyd is gone for good.
    bridge.wait_status(&old, "Dead", TIMEOUT).await?;
    let r = bridge.get(&format!("/api/terminals/{old}")).await?;
    ensure!(r.status == 410, "{r:?}");
    let log = bridge.log();
    ensure!(log.contains("lost the connection to ptyd"), "{}", bridge.log_tail());
    drop(second);
    Ok(())
}

#[tokio::test]
async fn sigterm_closes_sockets_with_1001_and_leaves_terminals_running() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let mut bridge = Bridge::start(daemon.socket(), &["--grace", "20s"]).await?;
    let id = bridge.create("").await?;
    let mut ws = bridge.connect(&id, None).await?;
    ws.send_input(b"echo st''ay\r").await?;
    ws.read_until("stay", TIMEOUT).await?;
    bridge.signal(Signal::SIGTERM)?;
    let (code, reason) = ws.expect_close(TIMEOUT).await?;
    ensure!(code == 1001 && reason == "ptyd-bridge is shutting down", "{code} {reason}");
    drop(ws);
    let status = bridge.wait_exit(TIMEOUT).await?;
    ensure!(status.success(), "{status}; log:\n{}", bridge.log_tail());
    let info = daemon.client().await.info(id.parse()?).await?;
    ensure!(info.state == ipc_proto::SessionState::Running, "{info:?}");
    let next = Bridge::start(daemon.socket(), &["--grace", "20s"]).await?;
    ensure!(next.terminal(&id).await?["status"] == "Disconnected");
    Ok(())
}
