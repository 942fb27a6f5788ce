//! The terminal lifecycle through ptyd-bridge: Active → Disconnected → Active with exact
//! replay (inside the window, and with a `dropped` notice outside it), grace expiry to Dead
//! (410, process killed and reaped), heartbeat and idle closes, takeover, exit and delete.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ipc_proto::{SessionId, SessionState};
use ptyd_tests::bridge::{upgrade_status, Bridge, GRACE, HEARTBEAT, IDLE, PONG_TIMEOUT};
use ptyd_tests::{Daemon, DaemonOptions, TIMEOUT};

/// A config file with a profile that prints nothing until it gets input.
fn quiet_profile(dir: &tempfile::TempDir) -> Result<PathBuf> {
    let path = dir.path().join("ptyd.toml");
    std::fs::write(&path, "[bridge.profiles.quiet]\ncommand = \"cat\"\n")?;
    Ok(path)
}

/// Waits until ptyd holds output up to at least `offset` for `id`.
async fn wait_output_end(daemon: &Daemon, id: SessionId, offset: u64) -> Result<()> {
    let client = daemon.client().await;
    let ok = ptyd_tests::wait_until_with(TIMEOUT, async || {
        client.info(id).await.is_ok_and(|i| i.output_offset >= offset)
    })
    .await;
    ensure!(ok, "output of {id} never reached {offset}");
    Ok(())
}

#[tokio::test]
async fn reconnect_within_grace_resumes_exactly() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge = Bridge::start(daemon.socket(), &["--grace", "20s"]).await?;
    let id = bridge.create("").await?;
    let sid: SessionId = id.parse()?;
    let mut ws = bridge.connect(&id, None).await?;
    ws.send_input(b"echo fi''rst\r").await?;
    ws.read_until("first", TIMEOUT).await?;
    let resume_at = ws.offset;
    ws.close().await?;
    bridge.wait_status(&id, "Disconnected", TIMEOUT).await?;

    // Output produced while nobody is connected.
    let client = daemon.client().await;
    client.input(sid, &b"echo se''cond\r"[..]).await?;
    let ok = ptyd_tests::wait_until_with(TIMEOUT, async || {
        client
            .read(sid, Some(resume_at), None)
            .await
            .is_ok_and(|(_, b)| String::from_utf8_lossy(&b).contains("second"))
    })
    .await;
    ensure!(ok, "ptyd never printed second");
    let (_, held) = client.read(sid, Some(resume_at), None).await?;

    let mut ws = bridge.connect(&id, Some(resume_at)).await?;
    ensure!(ws.hello["offset"] == resume_at && ws.hello["dropped"] == 0, "{}", ws.hello);
    ensure!(ws.hello["grace_ms"] == 20_000, "hello tells the grace: {}", ws.hello);
    ws.read_until("second", TIMEOUT).await?;
    ensure!(ws.output.starts_with(&held), "replay {:?} != held {:?}", ws.output, held);
    bridge.wait_status(&id, "Active", TIMEOUT).await?;
    let log = bridge.log();
    for line in [
        format!("WebSocket disconnected for terminal {id}"),
        "Status transition: Active → Disconnected".into(),
        "Buffering output for 20-second grace period".into(),
        "(within grace period)".into(),
        "Status transition: Disconnected → Active".into(),
        format!("Replaying {} bytes of buffered output", held.len()),
    ] {
        ensure!(log.contains(&line), "{line:?} not logged:\n{}", bridge.log_tail());
    }
    ensure!(log.contains(&format!("ws{{terminal={id}")), "the span names the terminal");
    Ok(())
}

#[tokio::test]
async fn reconnect_after_the_window_reports_dropped_bytes() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge =
        Bridge::start(daemon.socket(), &["--grace", "20s", "--replay-bytes", "64"]).await?;
    let id = bridge.create("").await?;
    let sid: SessionId = id.parse()?;
    let mut ws = bridge.connect(&id, None).await?;
    ws.send_input(b"echo re''ady\r").await?;
    ws.read_until("ready", TIMEOUT).await?;
    let resume_at = ws.offset;
    ws.close().await?;
    bridge.wait_status(&id, "Disconnected", TIMEOUT).await?;

    let client = daemon.client().await;
    client.input(sid, &b"printf '%0300d\\n' 7\r"[..]).await?;
    wait_output_end(&daemon, sid, resume_at + 300).await?;

    let mut ws = bridge.connect(&id, Some(resume_at)).await?;
    let offset = ws.hello["offset"].as_u64().context("offset")?;
    let dropped = ws.hello["dropped"].as_u64().context("dropped")?;
    ensure!(dropped > 0 && offset == resume_at + dropped, "{}", ws.hello);
    let notice = ws.expect_control("dropped", TIMEOUT).await?;
    ensure!(notice["offset"] == resume_at && notice["bytes"] == dropped, "{notice}");
    let (_, held) = client.read(sid, Some(offset), None).await?;
    while ws.output.len() < held.len() {
        ws.next(TIMEOUT).await?;
    }
    ensure!(ws.output.starts_with(&held), "replay differs from ptyd's window");
    ws.close().await?;
    bridge.wait_status(&id, "Disconnected", TIMEOUT).await?;

    // Without `since`: the whole window, nothing reported lost.
    let ws = bridge.connect(&id, None).await?;
    let end = ws.hello["end"].as_u64().context("end")?;
    ensure!(ws.hello["dropped"] == 0 && ws.hello["offset"] == end - 64, "{}", ws.hello);
    Ok(())
}

#[tokio::test]
async fn grace_expiry_kills_the_process_and_answers_410() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().kill_grace("200ms")).await?;
    let bridge = Bridge::start(daemon.socket(), &["--grace", GRACE]).await?;
    let id = bridge.create("").await?;
    let mut ws = bridge.connect(&id, None).await?;
    ws.send_input(b"echo al''ive\r").await?;
    ws.read_until("alive", TIMEOUT).await?;
    let pid = bridge.terminal(&id).await?["pid"].as_u64().context("pid")? as u32;
    ws.close().await?;
    bridge.wait_status(&id, "Dead", TIMEOUT).await?;

    let r = bridge.get(&format!("/api/terminals/{id}")).await?;
    ensure!(r.status == 410 && r.json()?["error"] == "Gone", "{r:?}");
    ensure!(r.json()?["end_reason"] == "grace_expired", "the 410 says why: {r:?}");
    let e = bridge.upgrade(&format!("/ws/terminal/{id}"), &[]).await.err().context("upgraded")?;
    ensure!(upgrade_status(&e) == Some(410), "{e}");
    let log =
        bridge.wait_for_log("Reconnect attempt received, returning 410 Gone", TIMEOUT).await?;
    for line in [
        "Grace period expired (300ms) without reconnection".to_string(),
        format!("Killing PTY process for terminal {id}"),
        "Status transition: Disconnected → Dead".into(),
    ] {
        ensure!(log.contains(&line), "{line:?} not logged:\n{}", bridge.log_tail());
    }
    // ptyd killed the process group and reaped it: no process, no zombie.
    ensure!(
        ptyd_tests::wait_until_async(TIMEOUT, || !ptyd_tests::process_alive(pid)).await,
        "pid {pid} still runs"
    );
    ensure!(ptyd_tests::zombie_children(daemon.pid()).is_empty(), "zombies left");
    let info = daemon.client().await.info(id.parse()?).await?;
    ensure!(info.state == SessionState::Exited, "{info:?}");
    ensure!(bridge.get("/metrics").await?.body.contains("ptyd_bridge_grace_expiries_total 1"));
    Ok(())
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_closed_after_the_pong_timeout() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let args =
        ["--heartbeat-interval", HEARTBEAT, "--pong-timeout", PONG_TIMEOUT, "--grace", "20s"];
    let bridge = Bridge::start(daemon.socket(), &args).await?;
    let id = bridge.create("").await?;
    let mut ws = bridge.connect(&id, None).await?;
    // tungstenite answers Pings only while the socket is read: stop reading it.
    bridge.wait_status(&id, "Disconnected", TIMEOUT).await?;
    let log = bridge.log();
    for line in [
        "Sending heartbeat ping (frame 1)",
        "Pong timeout after 0.2 seconds",
        "Heartbeat failure detected, closing connection",
        "Status transition: Active → Disconnected",
    ] {
        ensure!(log.contains(line), "{line:?} not logged:\n{}", bridge.log_tail());
    }
    let (code, reason) = ws.expect_close(TIMEOUT).await?;
    ensure!(code == 4001 && reason == "no pong within 200ms", "{code} {reason}");
    // The terminal survived: a new socket resumes it.
    let mut ws = bridge.connect(&id, None).await?;
    ws.send_input(b"echo ba''ck\r").await?;
    ws.read_until("back", TIMEOUT).await?;
    ensure!(bridge.get("/metrics").await?.body.contains("ptyd_bridge_heartbeat_timeouts_total 1"));
    Ok(())
}

#[tokio::test]
async fn an_idle_socket_is_closed_and_the_terminal_waits_for_its_return() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let dir = tempfile::tempdir()?;
    let config = quiet_profile(&dir)?;
    let config = config.to_str().context("path")?;
    let args = [
        "--config",
        config,
        "--idle-timeout",
        IDLE,
        "--heartbeat-interval",
        HEARTBEAT,
        "--grace",
        "20s",
    ];
    let bridge = Bridge::start(daemon.socket(), &args).await?;
    let id = bridge.create(r#"{"profile":"quiet"}"#).await?;
    let started = tokio::time::Instant::now();
    let mut ws = bridge.connect(&id, None).await?;
    // Reading answers the Pings, which are not data: the idle timeout still applies.
    let (code, reason) = ws.expect_close(TIMEOUT).await?;
    ensure!(started.elapsed() >= Duration::from_millis(500), "{:?}", started.elapsed());
    ensure!(code == 1000 && reason == "idle timeout (500ms)", "{code} {reason}");
    bridge.wait_status(&id, "Disconnected", TIMEOUT).await?;
    let log = bridge.log();
    for line in ["No data received for 0.5 seconds", "Idle timeout reached, closing WebSocket"] {
        ensure!(log.contains(line), "{line:?} not logged:\n{}", bridge.log_tail());
    }
    // Data keeps a socket open past the idle timeout.
    let mut ws = bridge.connect(&id, None).await?;
    for i in 0..6 {
        ws.send_input(format!("tick{i}\n").as_bytes()).await?;
        ws.read_until(&format!("tick{i}"), TIMEOUT).await?;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    bridge.wait_status(&id, "Active", TIMEOUT).await?;
    Ok(())
}

#[tokio::test]
async fn a_socket_that_asks_takes_the_terminal_over() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge = Bridge::start(daemon.socket(), &[]).await?;
    let id = bridge.create("").await?;
    let mut first = bridge.connect(&id, None).await?;
    let mut second = bridge.connect_with(&id, "takeover=1").await?;
    let (code, reason) = first.expect_close(TIMEOUT).await?;
    ensure!(code == 4000 && reason == "taken over by another connection", "{code} {reason}");
    second.send_input(b"echo ta''ken\r").await?;
    second.read_until("taken", TIMEOUT).await?;
    bridge.wait_status(&id, "Active", TIMEOUT).await?;
    Ok(())
}

#[tokio::test]
async fn the_program_exiting_sends_exit_closes_normally_and_is_dead() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge = Bridge::start(daemon.socket(), &[]).await?;
    let id = bridge.create("").await?;
    let mut ws = bridge.connect(&id, None).await?;
    ws.send_input(b"exit 3\r").await?;
    let exit = ws.expect_control("exit", TIMEOUT).await?;
    ensure!(exit["code"] == 3 && exit["signal"].is_null(), "{exit}");
    ensure!(exit["end_reason"] == "exited", "{exit}");
    let (code, _) = ws.expect_close(TIMEOUT).await?;
    ensure!(code == 1000, "{code}");
    bridge.wait_status(&id, "Dead", TIMEOUT).await?;
    let e = bridge.upgrade(&format!("/ws/terminal/{id}"), &[]).await.err().context("upgraded")?;
    ensure!(upgrade_status(&e) == Some(410), "{e}");
    Ok(())
}

#[tokio::test]
async fn delete_kills_the_terminal_and_closes_its_socket() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().kill_grace("200ms")).await?;
    let bridge = Bridge::start(daemon.socket(), &[]).await?;
    let id = bridge.create("").await?;
    let mut ws = bridge.connect(&id, None).await?;
    let pid = bridge.terminal(&id).await?["pid"].as_u64().context("pid")? as u32;
    let r = bridge.delete(&format!("/api/terminals/{id}")).await?;
    ensure!(r.status == 200 && r.json()?["status"] == "Dead", "{r:?}");
    let (code, reason) = ws.expect_close(TIMEOUT).await?;
    ensure!(code == 4002, "{code} {reason}");
    ensure!(
        ptyd_tests::wait_until_async(TIMEOUT, || !ptyd_tests::process_alive(pid)).await,
        "pid {pid} still runs"
    );
    let r = bridge.delete(&format!("/api/terminals/{id}")).await?;
    ensure!(r.status == 410 && r.json()?["end_reason"] == "deleted", "{r:?}");
    let listed = bridge.get("/api/terminals").await?.json()?;
    let entry =
        listed["terminals"].as_array().and_then(|t| t.iter().find(|t| t["id"] == id.as_str()));
    ensure!(entry.is_some_and(|t| t["end_reason"] == "deleted"), "{listed}");
    Ok(())
}

/// A browser that vanishes without a close frame (Wi-Fi gone, laptop lid, crash) is a
/// transport error: logged as such, and the terminal waits for it in Disconnected.
#[tokio::test]
async fn a_connection_dropped_without_a_close_frame_is_a_transport_error() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge = Bridge::start(daemon.socket(), &["--grace", "20s"]).await?;
    let id = bridge.create("").await?;
    let ws = bridge.connect(&id, None).await?;
    bridge.wait_status(&id, "Active", TIMEOUT).await?;
    // Half the TCP connection goes away under the WebSocket: no close handshake.
    drop(ws.into_inner().into_inner());
    bridge.wait_status(&id, "Disconnected", TIMEOUT).await?;
    let log = bridge.wait_for_log("transport error: ", TIMEOUT).await?;
    ensure!(log.contains(&format!("WebSocket disconnected for terminal {id}")), "{log}");
    // Still there for the browser's return.
    let mut ws = bridge.connect(&id, None).await?;
    ws.send_input(b"echo ba''ck\r").await?;
    ws.read_until("back", TIMEOUT).await?;
    Ok(())
}

#[tokio::test]
async fn a_detached_terminal_outlives_the_grace_and_reopens_where_it_was() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().kill_grace("200ms")).await?;
    let bridge = Bridge::start(daemon.socket(), &["--grace", GRACE]).await?;
    let kept = bridge.create("").await?;
    let mut ws = bridge.connect(&kept, None).await?;
    ws.send_input(b"K=kept-shell; echo mar''ker\r").await?;
    ws.read_until("marker", TIMEOUT).await?;
    let r = bridge.post(&format!("/api/terminals/{kept}/detach"), "").await?;
    ensure!(r.status == 200 && r.json()?["status"] == "Detached", "{r:?}");
    let (code, reason) = ws.expect_close(TIMEOUT).await?;
    ensure!(code == 4003 && reason.contains("detached"), "closed with {code} {reason:?}");
    let again = bridge.post(&format!("/api/terminals/{kept}/detach"), "").await?;
    ensure!(again.status == 200, "detaching twice: {again:?}");
    bridge
        .wait_for_log(&format!("Terminal {kept} detached: kept without a socket"), TIMEOUT)
        .await?;

    // A terminal merely left goes at the end of the grace; the detached one, left earlier,
    // has outlived the grace by then and is still there.
    let left = bridge.create("").await?;
    bridge.connect(&left, None).await?.close().await?;
    bridge.wait_status(&left, "Dead", TIMEOUT).await?;
    ensure!(bridge.terminal(&kept).await?["status"] == "Detached");
    ensure!(bridge
        .get("/metrics")
        .await?
        .body
        .contains("ptyd_bridge_terminals{status=\"detached\"} 1"));

    // Reopened: its output is there, its shell has its variable, and it is Active again.
    let mut ws = bridge.connect(&kept, None).await?;
    ws.read_until("marker", TIMEOUT).await?;
    ws.send_input(b"echo \"$K\"\r").await?;
    ws.read_until("kept-shell\r\n", TIMEOUT).await?;
    ensure!(bridge.terminal(&kept).await?["status"] == "Active");
    // Unknown and dead terminals cannot be detached.
    let unknown = bridge.post(&format!("/api/terminals/{}/detach", SessionId::new()), "").await?;
    ensure!(unknown.status == 404, "{unknown:?}");
    let dead = bridge.post(&format!("/api/terminals/{left}/detach"), "").await?;
    ensure!(dead.status == 410, "{dead:?}");
    Ok(())
}

#[tokio::test]
async fn viewers_share_a_terminal_a_read_only_one_is_refused_and_the_last_one_out_leaves_it(
) -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge = Bridge::start(daemon.socket(), &["--grace", "20s"]).await?;
    let id = bridge.create("").await?;
    let mut writer = bridge.connect(&id, None).await?;
    let mut watcher = bridge.connect_with(&id, "role=read-only").await?;
    ensure!(writer.hello["role"] == "read-write" && watcher.hello["role"] == "read-only");
    // Both see what the writer types.
    writer.send_input(b"echo sha''red\r").await?;
    writer.read_until("shared", TIMEOUT).await?;
    watcher.read_until("shared", TIMEOUT).await?;
    // The watcher's keys are refused with a reason and never reach the shell.
    watcher.send_input(b"echo from-the-watcher\r").await?;
    let refused = watcher.expect_control("error", TIMEOUT).await?;
    ensure!(refused["code"] == "PermissionDenied", "{refused}");
    ensure!(refused["message"].as_str().is_some_and(|m| m.contains("read-only")), "{refused}");
    writer.send_input(b"echo after\r").await?;
    let text = writer.read_until("after\r\n", TIMEOUT).await?;
    ensure!(!text.contains("from-the-watcher"), "a read-only viewer's input was written: {text:?}");
    bridge.wait_for_log(&format!("viewer joined terminal {id} (2 viewers)"), TIMEOUT).await?;
    // One leaves: the other stays, Active.
    writer.close().await?;
    watcher.read_until("after", TIMEOUT).await?;
    bridge.wait_status(&id, "Active", TIMEOUT).await?;
    ensure!(bridge.terminal(&id).await?["status"] == "Active");
    // The last one leaves: Disconnected.
    watcher.close().await?;
    bridge.wait_status(&id, "Disconnected", TIMEOUT).await?;
    Ok(())
}

#[tokio::test]
async fn read_write_viewers_of_different_sizes_give_the_program_the_smallest() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge = Bridge::start(daemon.socket(), &[]).await?;
    let id = bridge.create("").await?;
    let mut big = bridge.connect(&id, None).await?;
    big.send_text(r#"{"type":"resize","cols":120,"rows":40}"#).await?;
    let size = big.expect_control("size", TIMEOUT).await?;
    ensure!(size["cols"] == 120 && size["rows"] == 40, "{size}");
    let mut small = bridge.connect(&id, None).await?;
    small.send_text(r#"{"type":"resize","cols":90,"rows":50}"#).await?;
    // Both are told the terminal's size: the smallest of each.
    let size = big.expect_control("size", TIMEOUT).await?;
    ensure!(size["cols"] == 90 && size["rows"] == 40, "{size}");
    small.send_input(b"stty size\r").await?;
    small.read_until("40 90\r\n", TIMEOUT).await?;
    // A read-only viewer's window does not count.
    let mut tiny = bridge.connect_with(&id, "role=read-only").await?;
    tiny.send_text(r#"{"type":"resize","cols":20,"rows":5}"#).await?;
    small.send_input(b"stty size\r").await?;
    small.read_until("\r\n40 90\r\n", TIMEOUT).await?;
    // The smaller one leaves: the terminal takes the other's size.
    small.close().await?;
    let size = big.expect_control("size", TIMEOUT).await?;
    ensure!(size["cols"] == 120 && size["rows"] == 40, "{size}");
    big.send_input(b"stty size\r").await?;
    big.read_until("40 120\r\n", TIMEOUT).await?;
    drop(tiny);
    Ok(())
}
