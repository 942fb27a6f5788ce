//! A client that attaches to a flooding session and never reads cannot hurt anyone else:
//! other sessions keep their latency, the daemon's memory stays bounded, a lossless
//! non-reader only pauses the session it is attached to, a lossy one costs nothing, and
//! once it goes away everything can still be killed and reaped.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use ipc_proto::{Attachment, Client, SessionId, SpawnReply, SpawnRequest};
use ptyd_tests::{
    collect_until, fd_targets, process_alive, read_until, rss_bytes, wait_until_async,
    wait_until_with, zombie_children, Daemon, DaemonOptions, RawConn, TIMEOUT,
};

/// The daemon's resident memory must stay below this while a session floods.
const RSS_LIMIT: u64 = 64 * 1024 * 1024;
/// Each echo round trip through an unrelated session must finish within this.
const ROUND_TRIP: Duration = Duration::from_secs(3);
/// How long the flood runs while the other clients are measured.
const FLOOD_FOR: Duration = Duration::from_secs(1);
/// What the flooding session prints, over and over.
const FLOOD_LINE: &str = "flood";

/// An unrelated client with its own `cat` session, timing echo round trips.
struct Bystander {
    client: Client,
    session: SpawnReply,
    att: Attachment,
    trips: u32,
    slowest: Duration,
}

impl Bystander {
    async fn start(daemon: &Daemon) -> Result<Bystander> {
        let client = daemon.try_client().await?;
        let session = client.spawn(SpawnRequest::new("cat", Vec::<String>::new())).await?;
        let att = client.attach(session.session, None, false).await?;
        Ok(Bystander { client, session, att, trips: 0, slowest: Duration::ZERO })
    }

    /// Sends a line and waits for its echo; fails if that takes longer than `ROUND_TRIP`.
    async fn round_trip(&mut self) -> Result<()> {
        self.trips += 1;
        let marker = format!("bystander-{}", self.trips);
        let started = Instant::now();
        tokio::time::timeout(
            ROUND_TRIP,
            self.client.input(self.session.session, format!("{marker}\n").into_bytes()),
        )
        .await
        .with_context(|| {
            format!("input of round trip {} took over {ROUND_TRIP:?}", self.trips)
        })??;
        read_until(&mut self.att, marker.as_str(), ROUND_TRIP)
            .await
            .with_context(|| format!("round trip {} took over {ROUND_TRIP:?}", self.trips))?;
        self.slowest = self.slowest.max(started.elapsed());
        Ok(())
    }
}

fn daemon_rss(daemon: &Daemon, when: &str) -> Result<u64> {
    let rss = rss_bytes(daemon.pid()).context("cannot read ptyd's VmRSS")?;
    ensure!(
        rss < RSS_LIMIT,
        "ptyd's resident memory is {} MiB {when} (limit {} MiB)",
        rss / (1024 * 1024),
        RSS_LIMIT / (1024 * 1024)
    );
    Ok(rss)
}

async fn output_offset(client: &Client, session: SessionId) -> Result<u64> {
    Ok(client.info(session).await?.output_offset)
}

/// Waits until `session`'s output offset has not moved for `still`; returns it.
async fn wait_for_stall(client: &Client, session: SessionId, still: Duration) -> Result<u64> {
    let mut last = (output_offset(client, session).await?, Instant::now());
    let stalled = wait_until_with(TIMEOUT, async || {
        let Ok(now) = output_offset(client, session).await else { return false };
        if now != last.0 {
            last = (now, Instant::now());
            return false;
        }
        last.1.elapsed() >= still
    })
    .await;
    ensure!(stalled, "the output of {session} never stopped growing (at {} bytes)", last.0);
    Ok(last.0)
}

/// Waits until `session`'s output offset is past `past`.
async fn wait_for_progress(
    client: &Client,
    session: SessionId,
    past: u64,
    what: &str,
) -> Result<u64> {
    let mut now = past;
    let moved = wait_until_with(TIMEOUT, async || {
        now = output_offset(client, session).await.unwrap_or(now);
        now > past
    })
    .await;
    ensure!(moved, "{what}: the output of {session} stayed at {past} bytes");
    Ok(now)
}

/// Kills the sessions, waits for each, and checks that nothing is left running,
/// unreaped or holding a slot.
async fn kill_and_check_reaped(
    daemon: &Daemon,
    client: &Client,
    sessions: &[&SpawnReply],
) -> Result<()> {
    for s in sessions {
        client.kill(s.session, None).await?;
    }
    for s in sessions {
        let status = client
            .wait(s.session, Some(TIMEOUT))
            .await
            .with_context(|| format!("session {} ({}) did not end after kill", s.session, s.pid))?;
        ensure!(status.signal.is_some(), "session {} should be killed, got {status:?}", s.pid);
        ensure!(
            wait_until_async(TIMEOUT, || !process_alive(s.pid)).await,
            "pid {} still alive after the kill",
            s.pid
        );
    }
    ensure!(
        wait_until_async(TIMEOUT, || zombie_children(daemon.pid()).is_empty()).await,
        "zombies under ptyd: {:?}",
        zombie_children(daemon.pid())
    );
    let list = client.list().await?;
    ensure!(list.active == 0, "slots still held after every session ended: {list:?}");
    Ok(())
}

#[tokio::test]
async fn a_lossless_client_that_never_reads_pauses_only_its_own_session() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().kill_grace("200ms")).await?;
    let ctl = daemon.try_client().await?;
    let flood = ctl.spawn(SpawnRequest::new("yes", [FLOOD_LINE])).await?;
    wait_for_progress(&ctl, flood.session, 0, "before any attach").await?;

    // X attaches lossless and never reads its attachment.
    let x = daemon.try_client().await?;
    let x_att = x.attach(flood.session, None, true).await?;
    let mut y = Bystander::start(&daemon).await?;
    let rss_before = daemon_rss(&daemon, "once the flood started")?;

    let started = Instant::now();
    while y.trips < 5 || started.elapsed() < FLOOD_FOR {
        y.round_trip().await?;
    }
    let rss_after = daemon_rss(&daemon, &format!("after {:?} of flood", started.elapsed()))?;

    // Lossless means the session waits for X: its output stops at a bounded offset
    // (what the pipes and queues between it and X hold) instead of piling up in ptyd.
    let stalled_at = wait_for_stall(&ctl, flood.session, Duration::from_millis(300)).await?;
    ensure!(
        stalled_at < RSS_LIMIT,
        "the session produced {stalled_at} bytes for a client that reads nothing"
    );
    y.round_trip().await.context("while the flooding session is paused")?;
    let rss_stalled = daemon_rss(&daemon, "with the flood paused")?;
    eprintln!(
        "ptyd rss {} / {} / {} KiB; flood paused at {stalled_at} bytes; slowest of {} round \
         trips {:?}",
        rss_before / 1024,
        rss_after / 1024,
        rss_stalled / 1024,
        y.trips,
        y.slowest
    );

    // X goes away: the session is released and floods again, and is still killable.
    drop(x_att);
    drop(x);
    wait_for_progress(&ctl, flood.session, stalled_at, "after X disconnected").await?;
    y.round_trip().await?;
    kill_and_check_reaped(&daemon, &ctl, &[&flood, &y.session]).await?;
    daemon_rss(&daemon, "at the end")?;
    Ok(())
}

#[tokio::test]
async fn a_lossy_client_that_never_reads_costs_the_others_nothing() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().kill_grace("200ms")).await?;
    let ctl = daemon.try_client().await?;
    let flood = ctl.spawn(SpawnRequest::new("yes", [FLOOD_LINE])).await?;

    // X attaches lossy and never reads; Z attaches lossy and reads everything it gets.
    let x = daemon.try_client().await?;
    let x_att = x.attach(flood.session, None, false).await?;
    let z = daemon.try_client().await?;
    let mut z_att = z.attach(flood.session, None, false).await?;
    let mut y = Bystander::start(&daemon).await?;

    let mut z_bytes = 0u64;
    let mut z_dropped = 0u64;
    let mut z_next: Option<u64> = None;
    let mut rss_before = None;
    let started = Instant::now();
    let offset_at_start = output_offset(&ctl, flood.session).await?;
    let mut reads = 0u32;
    while reads < 50 || y.trips < 5 || started.elapsed() < FLOOD_FOR {
        let got = collect_until(&mut z_att, FLOOD_LINE, TIMEOUT)
            .await
            .context("the reading lossy client stopped receiving the flood")?;
        // collect_until checks the offsets inside one call; across calls, each one must
        // begin where the previous one ended (output or a reported gap).
        let begin = got.dropped.first().map(|d| d.0).into_iter().chain(got.first_offset).min();
        if let (Some(expected), Some(begin)) = (z_next, begin) {
            ensure!(begin == expected, "Z's events resumed at {begin}, expected {expected}");
        }
        ensure!(
            got.data.iter().all(|b| b"flod\r\n".contains(b)),
            "unexpected bytes in the flood: {:?}",
            got.text()
        );
        z_next = got.next_offset.or(z_next);
        z_bytes += got.data.len() as u64;
        z_dropped += got.dropped_bytes();
        reads += 1;
        if rss_before.is_none() {
            rss_before = Some(daemon_rss(&daemon, "once the flood reached Z")?);
        }
        if reads % 10 == 0 {
            y.round_trip().await?;
        }
    }
    let rss_after = daemon_rss(&daemon, &format!("after {:?} of flood", started.elapsed()))?;
    // A lossy non-reader never holds the session back: it keeps flooding.
    let offset_now = output_offset(&ctl, flood.session).await?;
    ensure!(offset_now > offset_at_start, "the session stopped producing output");
    wait_for_progress(&ctl, flood.session, offset_now, "with a lossy client not reading").await?;
    eprintln!(
        "ptyd rss {} / {} KiB; Z read {z_bytes} bytes in {reads} reads with {z_dropped} \
         reported dropped; session at {offset_now} bytes; slowest of {} round trips {:?}",
        rss_before.unwrap_or_default() / 1024,
        rss_after / 1024,
        y.trips,
        y.slowest
    );

    drop(x_att);
    drop(x);
    y.round_trip().await?;
    kill_and_check_reaped(&daemon, &ctl, &[&flood, &y.session]).await?;
    Ok(())
}

/// Open pseudo-terminal masters in ptyd.
fn ptmx_fds(daemon: &Daemon) -> Vec<(i32, String)> {
    fd_targets(daemon.pid())
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, target)| target.contains("ptmx"))
        .collect()
}

#[tokio::test]
async fn a_session_paused_by_a_lossless_non_reader_can_still_be_killed() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().kill_grace("200ms")).await?;
    let ctl = daemon.try_client().await?;
    let flood = ctl.spawn(SpawnRequest::new("yes", [FLOOD_LINE])).await?;
    // The descriptors one running session holds on /dev/ptmx (master, reader, writer).
    let per_session = ptmx_fds(&daemon).len();
    ensure!(per_session > 0, "no pty master open in ptyd for a running session");
    let x = daemon.try_client().await?;
    let x_att = x.attach(flood.session, None, true).await?;
    wait_for_stall(&ctl, flood.session, Duration::from_millis(300)).await?;

    // Killed while X is still attached and still not reading.
    kill_and_check_reaped(&daemon, &ctl, &[&flood]).await?;
    let mut y = Bystander::start(&daemon).await?;
    y.round_trip().await?;

    // Once X leaves, nothing of the killed session is left in ptyd: only Y's terminal
    // is open.
    drop(x_att);
    drop(x);
    ensure!(
        wait_until_async(TIMEOUT, || ptmx_fds(&daemon).len() == per_session).await,
        "ptyd holds pty masters of ended sessions: {:?}",
        ptmx_fds(&daemon)
    );
    kill_and_check_reaped(&daemon, &ctl, &[&y.session]).await?;
    ensure!(
        wait_until_async(TIMEOUT, || ptmx_fds(&daemon).is_empty()).await,
        "ptyd holds pty masters with no session running: {:?}",
        ptmx_fds(&daemon)
    );
    Ok(())
}

/// What a lossless client that stopped reading may let its session run ahead: ptyd's and
/// the client library's queues are bounded in bytes (128 KiB each), plus what the socket
/// and the framing buffers hold. Bounded in chunks, as they were, they let 32 KiB reads
/// pile up several MiB.
const PAUSED_AHEAD: u64 = 1024 * 1024;

#[tokio::test]
async fn a_paused_reader_holds_back_a_bounded_number_of_bytes_and_leaving_frees_its_connection(
) -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().kill_grace("200ms")).await?;
    let ctl = daemon.try_client().await?;
    let quiet = ctl.spawn(SpawnRequest::new("cat", Vec::<String>::new())).await?;
    let flood = ctl.spawn(SpawnRequest::new("yes", [FLOOD_LINE])).await?;
    let start = output_offset(&ctl, flood.session).await?;

    // X reads its `cat` attachment but never its lossless one of the flood: its
    // connection's reader waits for room there, and the flood waits for X.
    let x = daemon.try_client().await?;
    let mut x_quiet = x.attach(quiet.session, None, false).await?;
    let x_flood = x.attach(flood.session, Some(start), true).await?;
    // Counted from where the live feed began (what yes printed before, with nobody
    // subscribed, only went to the ring).
    let attached_at = x_flood.reply.end;
    let stalled_at = wait_for_stall(&ctl, flood.session, Duration::from_millis(300)).await?;
    let ahead = stalled_at - attached_at;
    eprintln!("the flood paused {ahead} bytes after the attach");
    ensure!(
        ahead <= PAUSED_AHEAD,
        "a client that reads nothing let the session run {ahead} bytes ahead (bound \
         {PAUSED_AHEAD})"
    );

    // X drops the attachment it was not reading: its connection carries the rest again.
    drop(x_flood);
    ctl.input(quiet.session, b"still-here\n".to_vec()).await?;
    read_until(&mut x_quiet, "still-here", TIMEOUT)
        .await
        .context("the connection stayed stuck on an attachment that was dropped")?;
    kill_and_check_reaped(&daemon, &ctl, &[&flood, &quiet]).await?;
    Ok(())
}

/// Two sessions for windowed attachments: `yes`, and a print of 1 MiB that ends, whose
/// replay window holds all of it (so an attach from 0 misses nothing).
async fn flood_and_print(client: &Client) -> Result<(SessionId, SessionId)> {
    let flood = client.spawn(SpawnRequest::new("yes", Vec::<String>::new())).await?.session;
    let script = "head -c 1048576 /dev/zero | tr '\\0' x; echo; echo done";
    let req =
        SpawnRequest { replay_bytes: Some(2 << 20), ..SpawnRequest::new("sh", ["-c", script]) };
    let short = client.spawn(req).await?.session;
    Ok((flood, short))
}

#[tokio::test]
async fn windowed_attachments_share_a_connection_each_held_only_by_its_own_acks() -> Result<()> {
    const WINDOW: u64 = 64 * 1024;
    // One event may go out past the window.
    const MAX_EVENT: u64 = 64 * 1024;
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.client().await;
    let (flood, short) = flood_and_print(&client).await?;
    let mut raw = RawConn::connect_hello(daemon.socket()).await?;
    for (session, since) in [(flood, serde_json::Value::Null), (short, 0.into())] {
        let header = serde_json::json!({
            "type": "attach", "session": session, "since": since, "lossless": true, "window": WINDOW
        });
        let reply = raw.request(header).await?;
        ensure!(reply.kind() == "attached", "{}", reply.header);
    }
    // The short session's output is taken and acknowledged as it comes; the flood's is
    // never acknowledged, and must not hold the other up.
    let (mut flood_got, mut short_got, mut short_acked) = (0u64, 0u64, 0u64);
    let mut short_start = None;
    loop {
        let frame = raw.recv(TIMEOUT).await?.context("connection closed")?;
        let session = frame.header["session"].as_str().unwrap_or_default().to_string();
        match frame.kind() {
            "output" if session == flood.to_string() => flood_got += frame.payload.len() as u64,
            "output" => {
                let offset = frame.header["offset"].as_u64().context("offset")?;
                short_start.get_or_insert(offset);
                short_got += frame.payload.len() as u64;
                let end = offset + frame.payload.len() as u64;
                if end - short_acked >= WINDOW / 2 {
                    // Not waited for (ids of their own, far from the connection's counter).
                    let ack = serde_json::json!({
                        "id": (1u64 << 40) + end, "type": "ack", "session": short, "offset": end
                    });
                    raw.send_json(&ack, &[]).await?;
                    short_acked = end;
                }
            }
            "exit" if session == short.to_string() => break,
            _ => {}
        }
    }
    ensure!(short_got > 1 << 20, "the short session sent {short_got} bytes");
    ensure!(
        flood_got <= WINDOW + MAX_EVENT,
        "{flood_got} bytes of an attachment never acknowledged (window {WINDOW})"
    );
    // Acknowledged, it goes on.
    let ack =
        raw.request(serde_json::json!({"type": "ack", "session": flood, "offset": 1u64 << 50}));
    ensure!(ack.await?.kind() == "ok");
    let before = flood_got;
    while flood_got < before + 4 * WINDOW {
        let frame = raw.recv(TIMEOUT).await?.context("connection closed")?;
        if frame.kind() == "output" && frame.header["session"] == flood.to_string() {
            flood_got += frame.payload.len() as u64;
        }
    }
    // Ill-formed: an ack for a session attached without a window, a window of 0.
    let mut other = RawConn::connect_hello(daemon.socket()).await?;
    let attach = serde_json::json!({"type": "attach", "session": flood, "lossless": false});
    other.request(attach).await?;
    let reply =
        other.request(serde_json::json!({"type": "ack", "session": flood, "offset": 1})).await?;
    ensure!(
        reply.error_message()
            == Some(
                &format!("session {flood} is not attached with a window on this connection")[..]
            ),
        "{}",
        reply.header
    );
    let zero = serde_json::json!({"type": "attach", "session": flood, "window": 0});
    let reply = other.request(zero).await?;
    ensure!(reply.error_message() == Some("window must be at least 1 byte"), "{}", reply.header);
    client.kill(flood, None).await?;
    Ok(())
}

#[tokio::test]
async fn one_client_carries_windowed_attachments_a_stalled_reader_holds_up_only_its_own(
) -> Result<()> {
    const WINDOW: u64 = 64 * 1024;
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.client().await;
    let (flood, short) = flood_and_print(&client).await?;
    let never = ipc_proto::ScreenStart::Never;
    // Not read for now: without its own window it would fill the connection's queue for
    // this session and stop the connection's reader, and with it the other attachment.
    let mut stalled = client.attach_windowed(flood, None, true, never, WINDOW).await?;
    let mut moving = client.attach_windowed(short, Some(0), true, never, WINDOW).await?;
    let mut got = 0usize;
    loop {
        let ev = tokio::time::timeout(TIMEOUT, moving.next()).await;
        match ev.context("the moving attachment stalled")? {
            Some(ipc_proto::SessionEvent::Output { data, .. }) => got += data.len(),
            Some(ipc_proto::SessionEvent::Exit(_)) => break,
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    ensure!(got > 1 << 20, "{got} bytes");
    // The stalled one goes on once read: taking its events acknowledges them.
    let mut flooded = 0usize;
    while flooded < 1 << 20 {
        let ev = tokio::time::timeout(TIMEOUT, stalled.next()).await.context("stalled for good")?;
        if let Some(ipc_proto::SessionEvent::Output { data, .. }) = ev {
            flooded += data.len();
        }
    }
    client.kill(flood, None).await?;
    Ok(())
}
