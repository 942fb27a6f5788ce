//! Ending a session ends its whole process group, reaps everything, and leaks no fd
//! into children.

use std::time::Duration;

use anyhow::{ensure, Result};
use ipc_proto::SpawnRequest;
use ptyd_tests::{
    fd_targets, pids_with_cmdline, process_alive, read_until, wait_until_async, zombie_children,
    Daemon, DaemonOptions, TIMEOUT,
};

#[tokio::test]
async fn killing_a_session_kills_its_background_jobs_too() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().kill_grace("200ms")).await?;
    let client = daemon.client().await;
    // A unique argument lets the test find exactly these sleeps among the machine's processes.
    let marker = format!("1000.{}", std::process::id());
    let script = format!("sleep {marker} & echo started; exec sleep {marker}");
    let spawned = client.spawn(SpawnRequest::new("sh", ["-c", script.as_str()])).await?;
    let mut att = client.attach(spawned.session, Some(0), false).await?;
    read_until(&mut att, "started", TIMEOUT).await?;
    ensure!(
        wait_until_async(TIMEOUT, || pids_with_cmdline(&marker).len() == 2).await,
        "expected two sleeps, found {:?}",
        pids_with_cmdline(&marker)
    );

    client.kill(spawned.session, None).await?;
    let status = client.wait(spawned.session, Some(TIMEOUT)).await?;
    ensure!(status.signal.is_some(), "a killed session reports its signal, got {status:?}");
    ensure!(
        wait_until_async(TIMEOUT, || pids_with_cmdline(&marker).is_empty()).await,
        "sleeps survived the kill: {:?}",
        pids_with_cmdline(&marker)
    );
    ensure!(
        wait_until_async(TIMEOUT, || zombie_children(daemon.pid()).is_empty()).await,
        "zombies left under ptyd: {:?}",
        zombie_children(daemon.pid())
    );
    Ok(())
}

#[tokio::test]
async fn a_shell_that_ignores_sighup_is_still_killed() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().kill_grace("200ms")).await?;
    let client = daemon.client().await;
    let script = "trap '' HUP; echo trapped; while :; do sleep 0.05; done";
    let spawned = client.spawn(SpawnRequest::new("bash", ["-c", script])).await?;
    let mut att = client.attach(spawned.session, Some(0), false).await?;
    read_until(&mut att, "trapped", TIMEOUT).await?;

    client.kill(spawned.session, None).await?;
    let status = client.wait(spawned.session, Some(TIMEOUT)).await?;
    ensure!(status.signal == Some(9), "escalation to SIGKILL expected, got {status:?}");
    ensure!(
        wait_until_async(TIMEOUT, || !process_alive(spawned.pid)).await,
        "bash {} still alive after the kill",
        spawned.pid
    );
    ensure!(daemon.log().contains("ignored SIGHUP"), "the escalation is logged");
    Ok(())
}

#[tokio::test]
async fn natural_exit_also_ends_the_rest_of_the_group() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().kill_grace("200ms")).await?;
    let client = daemon.client().await;
    let marker = format!("999.{}", std::process::id());
    let script = format!("sleep {marker} & exit 0");
    let spawned = client.spawn(SpawnRequest::new("sh", ["-c", script.as_str()])).await?;
    let status = client.wait(spawned.session, Some(TIMEOUT)).await?;
    ensure!(status.code == Some(0), "{status:?}");
    ensure!(
        wait_until_async(TIMEOUT, || pids_with_cmdline(&marker).is_empty()).await,
        "a background job outlived its session: {:?}",
        pids_with_cmdline(&marker)
    );
    ensure!(
        wait_until_async(TIMEOUT, || zombie_children(daemon.pid()).is_empty()).await,
        "zombies left"
    );
    Ok(())
}

#[tokio::test]
async fn a_child_inherits_no_descriptor_but_its_terminal() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.client().await;
    // Another session and this open connection are descriptors the daemon holds. The
    // shell says "ready" once its own start-up (the dynamic loader, locale files) has
    // closed what it opened, and then blocks in `read` holding nothing new.
    let script = "echo ready; read x";
    let other = client.spawn(SpawnRequest::new("sh", ["-c", script])).await?;
    let spawned = client.spawn(SpawnRequest::new("sh", ["-c", script])).await?;
    for s in [&other, &spawned] {
        let mut att = client.attach(s.session, Some(0), false).await?;
        read_until(&mut att, "ready", TIMEOUT).await?;
        client.detach(s.session).await?;
    }
    let fds = fd_targets(spawned.pid)?;
    let pts: Vec<_> = fds.iter().filter(|(_, t)| t.starts_with("/dev/pts/")).collect();
    ensure!(
        fds.len() == 3 && pts.len() == 3 && fds.iter().all(|(fd, _)| (0..=2).contains(fd)),
        "expected only 0/1/2 on the session's own pty slave, got {fds:?}"
    );
    let own = &pts[0].1;
    ensure!(pts.iter().all(|(_, t)| t == own), "0/1/2 should be one slave: {fds:?}");
    let other_fds = fd_targets(other.pid)?;
    ensure!(
        other_fds.iter().all(|(_, t)| t != own),
        "sessions share a terminal: {other_fds:?} vs {fds:?}"
    );
    client.kill(other.session, None).await?;
    client.kill(spawned.session, None).await?;
    client.wait(spawned.session, Some(Duration::from_secs(5))).await?;
    Ok(())
}
