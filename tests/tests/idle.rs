//! The idle timeout: a session with no input, no output and nobody attached or holding
//! a lease is killed; zero disables it; attaching and leasing stop the clock, and letting
//! go restarts it; a spawn may override the daemon's default.
//!
//! Survival is shown against a reference: a session with the same (or a longer) timeout,
//! spawned later and left alone, is idle-killed first, so by then the survivor has been
//! idle at least as long without being killed.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use ipc_proto::{
    Client, DaemonEventKind, ExitStatus, Notice, SessionId, SessionState, SpawnReply, SpawnRequest,
};
use ptyd_tests::{process_alive, Daemon, DaemonOptions, TIMEOUT};

/// The daemon-wide idle timeout of these tests' daemons.
const IDLE: Duration = Duration::from_millis(300);

async fn sleep_session(client: &Client, idle_timeout_ms: Option<u64>) -> Result<SpawnReply> {
    let mut req = SpawnRequest::new("sleep", ["30"]);
    req.idle_timeout_ms = idle_timeout_ms;
    Ok(client.spawn(req).await?)
}

/// Waits for `session` to end and checks that it was killed by a signal.
async fn expect_killed(client: &Client, session: &SpawnReply, what: &str) -> Result<ExitStatus> {
    let status = client
        .wait(session.session, Some(TIMEOUT))
        .await
        .with_context(|| format!("{what} was not idle-killed within {TIMEOUT:?}"))?;
    ensure!(
        status.code.is_none() && status.signal.is_some(),
        "{what} should be killed by a signal, got {status:?}"
    );
    ensure!(!process_alive(session.pid), "{what}: pid {} still alive", session.pid);
    Ok(status)
}

async fn expect_running(client: &Client, session: &SpawnReply, what: &str) -> Result<()> {
    let info = client.info(session.session).await?;
    ensure!(
        info.state == SessionState::Running && info.exit.is_none(),
        "{what} should still be running: {info:?}"
    );
    ensure!(process_alive(session.pid), "{what}: pid {} is gone", session.pid);
    Ok(())
}

async fn expect_idle_killed_event(
    events: &mut tokio::sync::mpsc::Receiver<Notice>,
    session: SessionId,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let notice = tokio::time::timeout_at(deadline, events.recv())
            .await
            .context("no idle_killed event")?
            .context("the event stream ended")?;
        if let Notice::Event(ev) = notice {
            if ev.session == session && ev.event == DaemonEventKind::IdleKilled {
                return Ok(());
            }
        }
    }
}

#[tokio::test]
async fn an_unattached_session_is_idle_killed_and_zero_means_never() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().idle_timeout("300ms")).await?;
    let client = daemon.try_client().await?;
    let watcher = daemon.try_client().await?;
    let mut events = watcher.subscribe().await?;

    let never = sleep_session(&client, Some(0)).await?;
    let spawned_at = Instant::now();
    let idle = sleep_session(&client, None).await?;
    ensure!(client.info(idle.session).await?.idle_timeout_ms == 300, "daemon default not applied");
    ensure!(client.info(never.session).await?.idle_timeout_ms == 0);

    expect_killed(&client, &idle, "the unattached session").await?;
    ensure!(
        spawned_at.elapsed() >= IDLE,
        "killed after {:?}, before its idle timeout",
        spawned_at.elapsed()
    );
    expect_idle_killed_event(&mut events, idle.session).await?;
    let log = daemon.log();
    ensure!(
        log.contains("session idle with no client attached or lease held; killing it")
            && log.contains("idle timeout"),
        "the idle kill should be logged:\n{log}"
    );

    // A reference with a 1 s timeout, spawned after `never`, dies first: by then `never`
    // has been idle for more than 1 s.
    let reference = sleep_session(&client, Some(1000)).await?;
    expect_killed(&client, &reference, "the 1 s reference session").await?;
    ensure!(spawned_at.elapsed() > Duration::from_secs(1), "{:?}", spawned_at.elapsed());
    expect_running(&client, &never, "the session with idle_timeout_ms 0").await?;
    client.kill(never.session, None).await?;
    Ok(())
}

#[tokio::test]
async fn an_attached_session_survives_until_its_client_detaches() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().idle_timeout("300ms")).await?;
    let client = daemon.try_client().await?;
    let watched = sleep_session(&client, None).await?;
    let att = client.attach(watched.session, None, false).await?;
    let reference = sleep_session(&client, None).await?;

    expect_killed(&client, &reference, "the unattached reference").await?;
    expect_running(&client, &watched, "the attached session").await?;
    ensure!(client.info(watched.session).await?.attached == 1);

    // Letting go restarts the clock: killed a full timeout after the detach, not at once.
    let detached_at = Instant::now();
    drop(att);
    expect_killed(&client, &watched, "the session after its client detached").await?;
    let after = detached_at.elapsed();
    ensure!(after >= IDLE - Duration::from_millis(50), "killed {after:?} after the detach");
    Ok(())
}

#[tokio::test]
async fn a_leased_session_survives_until_the_lease_is_released() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().idle_timeout("300ms")).await?;
    let client = daemon.try_client().await?;
    let leased = sleep_session(&client, None).await?;
    client.lease(leased.session).await?;
    let reference = sleep_session(&client, None).await?;

    expect_killed(&client, &reference, "the unleased reference").await?;
    expect_running(&client, &leased, "the leased session").await?;
    ensure!(client.info(leased.session).await?.attached == 0, "a lease is not an attachment");

    let released_at = Instant::now();
    client.release(leased.session).await?;
    expect_killed(&client, &leased, "the session after its lease was released").await?;
    let after = released_at.elapsed();
    ensure!(after >= IDLE - Duration::from_millis(50), "killed {after:?} after the release");
    Ok(())
}

#[tokio::test]
async fn a_spawn_can_shorten_the_default_idle_timeout() -> Result<()> {
    // The daemon's default is 5 minutes.
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    let default = sleep_session(&client, None).await?;
    let spawned_at = Instant::now();
    let short = sleep_session(&client, Some(200)).await?;
    ensure!(client.info(short.session).await?.idle_timeout_ms == 200);
    ensure!(client.info(default.session).await?.idle_timeout_ms == 5 * 60 * 1000);

    expect_killed(&client, &short, "the session with idle_timeout_ms 200").await?;
    ensure!(spawned_at.elapsed() >= Duration::from_millis(200), "{:?}", spawned_at.elapsed());
    expect_running(&client, &default, "the session with the default timeout").await?;
    client.kill(default.session, None).await?;
    Ok(())
}
