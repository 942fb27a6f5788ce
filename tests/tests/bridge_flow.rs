//! Flow control through the real bridge: a client that acknowledges nothing holds the
//! output at the high watermark, the program stops with it (ptyd's output offset stands
//! still), and acknowledgements let it flow again.

use std::time::Duration;

use anyhow::{ensure, Result};
use ipc_proto::SessionId;
use ptyd_tests::bridge::{Bridge, WsClient, WsEvent};
use ptyd_tests::{Daemon, DaemonOptions, TIMEOUT};

const HIGH: u64 = 64 * 1024;

/// Reads output until nothing comes for `quiet`; returns how many bytes came.
async fn drain(ws: &mut WsClient, quiet: Duration) -> Result<u64> {
    let before = ws.offset;
    loop {
        match ws.next(quiet).await {
            Ok(WsEvent::Output(_) | WsEvent::Control(_)) => {}
            Ok(other) => anyhow::bail!("the socket ended: {other:?}"),
            Err(_) => return Ok(ws.offset - before),
        }
    }
}

#[tokio::test]
async fn unacknowledged_output_stops_the_program_until_acked() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let args = ["--flow-high", "65536", "--flow-low", "8192"];
    let bridge = Bridge::start(daemon.socket(), &args).await?;
    let id = bridge.create("").await?;
    let sid: SessionId = id.parse()?;
    let mut ws = bridge.connect(&id, None).await?;
    let acked = ws.offset;
    ws.send_text(&format!(r#"{{"type":"ack","offset":{acked}}}"#)).await?;
    ws.send_input(b"yes flood\r").await?;

    drain(&mut ws, Duration::from_millis(700)).await?;
    let unacked = ws.offset - acked;
    ensure!(unacked > HIGH, "output paused before the high watermark: {unacked} bytes");
    // Past the watermark by at most one read of ptyd's (32 KiB) and its framing.
    ensure!(unacked <= HIGH + 40 * 1024, "{unacked} bytes unacknowledged: not held");

    // The program is held too: ptyd's output end stands still.
    let client = daemon.client().await;
    let first = client.info(sid).await?.output_offset;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = client.info(sid).await?.output_offset;
    ensure!(first == second, "yes kept writing while paused: {first} → {second}");
    ensure!(drain(&mut ws, Duration::from_millis(300)).await? == 0, "output flowed unacked");

    // Acknowledging it all lets the next window through.
    let offset = ws.offset;
    ws.send_text(&format!(r#"{{"type":"ack","offset":{offset}}}"#)).await?;
    let more = drain(&mut ws, Duration::from_millis(700)).await?;
    ensure!(more > HIGH, "only {more} bytes after the ack");
    // ptyd buffered what yes wrote before it blocked; once that is acknowledged, yes runs.
    let mut resumed = false;
    for _ in 0..200 {
        let offset = ws.offset;
        ws.send_text(&format!(r#"{{"type":"ack","offset":{offset}}}"#)).await?;
        drain(&mut ws, Duration::from_millis(100)).await?;
        if client.info(sid).await?.output_offset > second {
            resumed = true;
            break;
        }
    }
    ensure!(resumed, "yes did not resume after its output was acknowledged");

    ws.send_input(b"\x03").await?;
    let deleted = bridge.delete(&format!("/api/terminals/{id}")).await?;
    ensure!(deleted.status == 200, "DELETE: {deleted:?}");
    client.wait(sid, Some(TIMEOUT)).await?;
    Ok(())
}

/// ptyd's open Unix sockets (its listener, its spawn helper's and its clients').
fn ptyd_sockets(daemon: &Daemon) -> Result<usize> {
    let fds = ptyd_tests::fd_targets(daemon.pid())?;
    Ok(fds.iter().filter(|(_, target)| target.starts_with("socket:")).count())
}

#[tokio::test]
async fn terminals_share_ptyd_connections_and_a_paused_one_holds_up_only_itself() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let args = ["--flow-high", "65536", "--flow-low", "8192"];
    let bridge = Bridge::start(daemon.socket(), &args).await?;
    let before = ptyd_sockets(&daemon)?;
    // One terminal floods and its browser acknowledges nothing past its start.
    let paused_id = bridge.create("").await?;
    let mut paused = bridge.connect(&paused_id, None).await?;
    let acked = paused.offset;
    paused.send_text(&format!(r#"{{"type":"ack","offset":{acked}}}"#)).await?;
    paused.send_input(b"yes flood\r").await?;
    drain(&mut paused, Duration::from_millis(300)).await?;
    ensure!(paused.offset - acked <= HIGH + 40 * 1024, "the paused terminal was not held");
    // Four others, on the same connection to ptyd, each print 1 MiB to the end.
    let mut others = Vec::new();
    for _ in 0..4 {
        let id = bridge.create("").await?;
        others.push((id.clone(), bridge.connect(&id, None).await?));
    }
    for (i, (_, ws)) in others.iter_mut().enumerate() {
        let line = format!("head -c 1048576 /dev/zero | tr '\\0' x; echo; echo end-''{i}\r");
        ws.send_input(line.as_bytes()).await?;
    }
    for (i, (_, ws)) in others.iter_mut().enumerate() {
        ws.read_until(&format!("end-{i}"), TIMEOUT).await?;
        ensure!(ws.output.len() > 1 << 20, "terminal {i} got {} bytes", ws.output.len());
    }
    let after = ptyd_sockets(&daemon)?;
    ensure!(after <= before + 1, "5 sockets opened {} connections to ptyd", after - before);
    ensure!(paused.offset - acked <= HIGH + 40 * 1024, "the paused terminal was not held");
    for id in std::iter::once(&paused_id).chain(others.iter().map(|(id, _)| id)) {
        let deleted = bridge.delete(&format!("/api/terminals/{id}")).await?;
        ensure!(deleted.status == 200, "DELETE: {deleted:?}");
    }
    Ok(())
}
