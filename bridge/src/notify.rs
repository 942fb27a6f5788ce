//! systemd notifications for the bridge process: READY=1 once HTTP is served, STATUS=
//! with the terminals and the link to ptyd, WATCHDOG=1 only after the bridge answered
//! its own `/health`, STOPPING=1 at shutdown. All are no-ops without `NOTIFY_SOCKET`.

use std::net::SocketAddr;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use ptyd_bridge::AppState;

/// How often STATUS= is refreshed when no watchdog asks for more.
const STATUS_EVERY: Duration = Duration::from_secs(5);

fn send(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// One line for `systemctl status`, e.g. "2 active, 1 disconnected, 0 detached terminals
/// on 127.0.0.1:3000; ptyd reachable".
fn status_line(state: &AppState) -> String {
    let c = state.registry.counts();
    let link = if state.daemon.is_connected() { "reachable" } else { "unreachable" };
    format!(
        "{} active, {} disconnected, {} detached terminals on {}; ptyd {link}",
        c.active, c.disconnected, c.detached, state.local_addr
    )
}

/// READY=1 and a first STATUS=, once the listener is bound and the link has had its try.
pub fn ready(state: &AppState) {
    send(&[NotifyState::Ready, NotifyState::Status(&status_line(state))]);
}

/// STOPPING=1.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping: closing sockets")]);
}

/// Refreshes STATUS= and, under a watchdog, pings it at half its timeout, but only after
/// the HTTP server answered `/health`: a wedged server stops the pings and systemd
/// restarts it.
pub async fn run(state: AppState, stop: CancellationToken) {
    let watchdog = sd_notify::watchdog_enabled().map(|t| t / 2);
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let every = watchdog.unwrap_or(STATUS_EVERY);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let status = status_line(&state);
        match tokio::time::timeout(every, answers_health(state.local_addr)).await {
            Ok(Ok(())) if watchdog.is_some() => {
                send(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
            }
            Ok(Ok(())) => send(&[NotifyState::Status(&status)]),
            Ok(Err(e)) => tracing::warn!(error = %e, "own /health failed; no watchdog ping"),
            Err(_) => tracing::warn!("own /health did not answer in {every:?}; no watchdog ping"),
        }
    }
}

/// GET /health on the bridge's own listener, expecting 200.
async fn answers_health(addr: SocketAddr) -> std::io::Result<()> {
    let mut conn = TcpStream::connect(addr).await?;
    let req = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await?;
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).await?;
    if &head[..9] == b"HTTP/1.1 " && &head[9..12] == b"200" {
        Ok(())
    } else {
        let got = String::from_utf8_lossy(&head).into_owned();
        Err(std::io::Error::other(format!("unexpected answer {got:?}")))
    }
}
