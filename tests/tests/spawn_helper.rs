//! Sessions are started by the spawn helper (`ptyd-spawner`, forked when ptyd starts), yet
//! are ptyd's own children with their terminal and nothing else; when the helper is killed,
//! ptyd says so and goes on spawning by itself.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ipc_proto::{AttachMode, SpawnRequest};
use ptyd_tests::{
    fd_targets, proc_stat, read_until, spawn_helper_of, wait_until_async, zombie_children, Daemon,
    DaemonOptions, Stopped, TIMEOUT,
};

/// The helper's pid.
fn helper_of(daemon: &Daemon) -> Result<u32> {
    spawn_helper_of(daemon.pid())
}

/// Spawns a shell that waits for input, checks what the child is once it has started up
/// (a program's own start, such as loading its locale, opens files for a moment), kills it
/// and waits for it.
async fn check_a_session(daemon: &Daemon) -> Result<()> {
    let client = daemon.client().await;
    let (spawned, mut att) = client
        .spawn_attached(
            SpawnRequest::new("sh", ["-c", "echo ready; read x"]),
            AttachMode { lossless: true },
        )
        .await?;
    read_until(&mut att, "ready", TIMEOUT).await?;
    let stat = proc_stat(spawned.pid).context("the session's process is not there")?;
    ensure!(stat.ppid == daemon.pid(), "the session's parent is {}, not ptyd", stat.ppid);
    ensure!(
        stat.session == spawned.pid && stat.pgrp == spawned.pid,
        "not a session leader: {stat:?}"
    );
    let fds = fd_targets(spawned.pid)?;
    ensure!(
        fds.len() == 3
            && fds.iter().all(|(fd, target)| *fd < 3 && target.starts_with("/dev/pts/"))
            && fds.iter().all(|(_, target)| *target == fds[0].1),
        "the session holds more than its terminal: {fds:?}"
    );
    client.kill(spawned.session, None).await?;
    let status = client.wait(spawned.session, Some(TIMEOUT)).await?;
    ensure!(status.signal.is_some(), "{status:?}");
    // Exit codes come through ptyd's own reaper.
    let exited = client.spawn(SpawnRequest::new("sh", ["-c", "exit 7"])).await?;
    let status = client.wait(exited.session, Some(TIMEOUT)).await?;
    ensure!(status.code == Some(7), "exit 7 reported as {status:?}");
    Ok(())
}

#[tokio::test]
async fn the_helper_starts_sessions_that_are_ptyds_children() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let helper = helper_of(&daemon)?;
    // The helper holds its standard descriptors and its socket to ptyd, nothing else.
    let fds = fd_targets(helper)?;
    ensure!(
        fds.iter().filter(|(fd, _)| *fd > 2).count() == 1
            && fds.iter().any(|(fd, target)| *fd > 2 && target.starts_with("socket:")),
        "the helper holds more than its socket: {fds:?}"
    );
    check_a_session(&daemon).await?;

    // A failed exec is reported with its reason, and the child that failed is reaped.
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("not-a-program");
    std::fs::write(&bad, b"\x7fELF nonsense")?;
    std::fs::set_permissions(&bad, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let client = daemon.client().await;
    let err = client
        .spawn(SpawnRequest::new(bad.to_str().context("path")?, Vec::<String>::new()))
        .await
        .expect_err("an unrunnable program spawned");
    ensure!(err.to_string().contains("Exec format error"), "unclear error: {err}");
    ensure!(
        wait_until_async(TIMEOUT, || zombie_children(daemon.pid()).is_empty()).await,
        "zombies under ptyd: {:?}",
        zombie_children(daemon.pid())
    );
    ensure!(helper_of(&daemon)? == helper, "the helper changed");
    Ok(())
}

#[tokio::test]
async fn without_its_helper_ptyd_spawns_by_itself() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let helper = helper_of(&daemon)?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(helper as i32), nix::sys::signal::SIGKILL)?;
    // ptyd reaps it like any child of its own.
    ensure!(
        wait_until_async(Duration::from_secs(10), || proc_stat(helper).is_none()).await,
        "the killed helper was not reaped: {:?}",
        proc_stat(helper)
    );
    check_a_session(&daemon).await?;
    daemon.wait_for_log("the spawn helper is gone", TIMEOUT).await?;
    check_a_session(&daemon).await?;
    // Said once, not per spawn.
    let said = daemon.log().matches("the spawn helper is gone").count();
    ensure!(said == 1, "said {said} times");
    Ok(())
}

#[tokio::test]
async fn a_spawn_under_way_does_not_hold_up_its_connections_next_requests() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.client().await;
    // With the helper stopped, a spawn cannot finish: whatever the connection answers
    // meanwhile, it answers past the spawn.
    let held = Stopped::new(helper_of(&daemon)?)?;
    // As many as a connection may have under way at once.
    let spawns = (0..8).map(|_| client.spawn(SpawnRequest::new("sh", ["-c", "read x"])));
    let mut spawns = futures::future::join_all(spawns);
    // Polled once first, so the spawns go out before the list.
    ensure!(futures::poll!(&mut spawns).is_pending(), "spawned with the helper stopped");
    tokio::select! {
        biased;
        r = &mut spawns => anyhow::bail!("spawns answered with their helper stopped: {r:?}"),
        list = tokio::time::timeout(TIMEOUT, client.list()) => {
            let list = list.context("list waited for the spawns before it")??;
            ensure!(list.sessions.is_empty(), "{:?}", list.sessions);
        }
    }
    drop(held);
    let spawned = tokio::time::timeout(TIMEOUT, spawns).await.context("no spawned replies")?;
    let listed = client.list().await?.sessions;
    for s in spawned {
        let s = s?;
        ensure!(listed.iter().any(|l| l.session == s.session), "{listed:?}");
        client.kill(s.session, None).await?;
        client.wait(s.session, Some(TIMEOUT)).await?;
    }
    Ok(())
}
