//! The socket from start to stop: a stale file is replaced, a live daemon's socket is
//! never taken over, the directory and socket are private, and SIGTERM ends every
//! session, reaps it and removes the socket.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use ipc_proto::SpawnRequest;
use ptyd_tests::procfs::all_processes;
use ptyd_tests::{
    process_alive, read_to_exit, read_until, wait_until_async, zombie_children, Daemon,
    DaemonOptions, RawConn, TIMEOUT,
};
use serde_json::json;

fn mode(path: &std::path::Path) -> Result<u32> {
    Ok(std::fs::symlink_metadata(path)
        .with_context(|| format!("cannot stat {}", path.display()))?
        .permissions()
        .mode()
        & 0o7777)
}

#[tokio::test]
async fn a_stale_socket_file_is_replaced() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("ptyd-stale-").tempdir()?;
    let path = dir.path().join("ptyd.sock");
    // Bound, then closed: the file stays behind, but nobody listens on it.
    drop(std::os::unix::net::UnixListener::bind(&path)?);
    ensure!(std::fs::symlink_metadata(&path)?.file_type().is_socket(), "no stale socket file");
    ensure!(
        std::os::unix::net::UnixStream::connect(&path).is_err(),
        "the stale socket should refuse connections"
    );

    let daemon = Daemon::start(DaemonOptions::new().socket(&path)).await?;
    let client = daemon.try_client().await?;
    ensure!(client.daemon().pid == daemon.pid(), "another process answered: {:?}", client.daemon());
    let spawned = client.spawn(SpawnRequest::new("sh", ["-c", "exit 4"])).await?;
    let status = client.wait(spawned.session, Some(TIMEOUT)).await?;
    ensure!(status.code == Some(4), "{status:?}");
    ensure!(daemon.log().contains("removing stale socket"), "the replacement should be logged");
    Ok(())
}

#[tokio::test]
async fn a_second_daemon_does_not_take_over_a_live_socket() -> Result<()> {
    let first = Daemon::start(DaemonOptions::new()).await?;
    let client = first.try_client().await?;
    let spawned = client.spawn(SpawnRequest::new("cat", Vec::<String>::new())).await?;
    let mut att = client.attach(spawned.session, None, false).await?;

    let mut second = Daemon::launch(DaemonOptions::new().socket(first.socket()))?;
    let status = second.wait_exit(TIMEOUT).await.context("the second ptyd should exit")?;
    ensure!(!status.success(), "the second ptyd should fail, got {status}");
    let expected = format!(
        "another ptyd is already serving {}; not taking over its socket",
        first.socket().display()
    );
    ensure!(second.log().contains(&expected), "expected {expected:?} in:\n{}", second.log());

    // The first is untouched: the socket file is still there and still leads to it,
    // and its existing connection and session still work.
    ensure!(first.socket().exists(), "the second ptyd removed the first one's socket");
    let fresh = first.try_client().await?;
    ensure!(fresh.daemon().pid == first.pid(), "another process answered: {:?}", fresh.daemon());
    ensure!(fresh.list().await?.sessions.len() == 1);
    client.input(spawned.session, &b"still here\n"[..]).await?;
    read_until(&mut att, "still here", TIMEOUT).await?;
    Ok(())
}

#[tokio::test]
async fn sigterm_ends_every_session_reaps_them_and_removes_the_socket() -> Result<()> {
    let mut daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    let script = "trap '' HUP; echo trapped; while :; do sleep 0.05; done";
    let stubborn = client.spawn(SpawnRequest::new("bash", ["-c", script])).await?;
    let mut att = client.attach(stubborn.session, Some(0), false).await?;
    read_until(&mut att, "trapped", TIMEOUT).await?;
    let sleeper = client.spawn(SpawnRequest::new("sleep", ["30"])).await?;
    let groups = [stubborn.pid, sleeper.pid];
    ensure!(groups.iter().all(|pid| process_alive(*pid)), "sessions not running");
    let in_groups = || -> Vec<(u32, char, String)> {
        all_processes()
            .into_iter()
            .filter(|p| groups.contains(&p.pgrp))
            .map(|p| (p.pid, p.state, p.comm))
            .collect()
    };

    let started = Instant::now();
    let status = daemon.stop().await?;
    let took = started.elapsed();
    ensure!(status.success(), "ptyd should exit 0 on SIGTERM, got {status}");
    // The default kill grace is 1 s; bash ignores SIGHUP and needs the SIGKILL.
    ensure!(took < Duration::from_secs(5), "shutdown took {took:?}");

    for pid in groups {
        ensure!(!process_alive(pid), "session process {pid} survived the shutdown");
    }
    ensure!(
        wait_until_async(TIMEOUT, || in_groups().is_empty()).await,
        "processes of the sessions' groups are left (zombies included): {:?}",
        in_groups()
    );
    ensure!(zombie_children(daemon.pid()).is_empty(), "zombies under the exited ptyd");
    ensure!(!daemon.socket().exists(), "the socket file was left behind");
    let mut shell = daemon.socket().as_os_str().to_owned();
    shell.push(".shell");
    let shell = std::path::PathBuf::from(shell);
    ensure!(!shell.exists(), "the shell integration's files were left behind in {shell:?}");

    let log = daemon.log();
    ensure!(log.contains("shutting down"), "the shutdown should be logged:\n{log}");
    // Both sessions were ended and reaped by ptyd itself, not left to init.
    let ended = log.matches("session ended; released pty slot").count();
    ensure!(ended == 2, "expected 2 sessions reaped by ptyd, the log shows {ended}:\n{log}");
    Ok(())
}

/// Shutdown ends sessions "as by kill", and the daemon drains connections after the
/// sessions have ended precisely so that their last frames get out: a client attached at
/// the time must see each session's `exit` event, and a pending `wait` its answer,
/// before the connection closes. Several sessions, because one can get lucky.
#[tokio::test]
async fn sigterm_tells_attached_and_waiting_clients_how_their_sessions_ended() -> Result<()> {
    const SESSIONS: usize = 8;
    let mut daemon = Daemon::start(DaemonOptions::new().kill_grace("5s")).await?;
    let client = daemon.try_client().await?;
    // A raw connection, so the waits can be left pending while a later request on the
    // same connection proves the daemon has read (and registered) them.
    let mut waiter = RawConn::connect_hello(daemon.socket()).await?;
    let mut sessions = Vec::new();
    for i in 0..SESSIONS {
        // On SIGHUP each prints a last burst of output, then exits 3 (well within the
        // grace): its exit event has to follow that output out of the stopping daemon.
        let script = "trap 'seq 1 5000; exit 3' HUP; echo ready; while :; do sleep 0.05; done";
        let spawned = client.spawn(SpawnRequest::new("sh", ["-c", script])).await?;
        let mut att = client.attach(spawned.session, Some(0), false).await?;
        read_until(&mut att, "ready", TIMEOUT).await?;
        let wait_id = 1000 + i as u64;
        let wait = json!({"id": wait_id, "type": "wait", "session": spawned.session.to_string()});
        waiter.send_json(&wait, b"").await?;
        sessions.push((spawned, att, wait_id));
    }
    let listed = waiter.request(json!({"type": "list"})).await?;
    ensure!(listed.kind() == "sessions", "{}", listed.header);
    // Every attachment is read at once: on one connection, an attachment nobody reads
    // would hold up the others.
    let readers: Vec<_> = sessions
        .into_iter()
        .map(|(spawned, mut att, wait_id)| {
            let reader = tokio::spawn(async move { read_to_exit(&mut att, TIMEOUT).await });
            (spawned, reader, wait_id)
        })
        .collect();

    let status = daemon.stop().await?;
    ensure!(status.success(), "ptyd should exit 0 on SIGTERM, got {status}");
    let frames = waiter.expect_closed(TIMEOUT).await?;
    let mut missing = Vec::new();
    for (spawned, reader, wait_id) in readers {
        match reader.await? {
            Ok(got) if got.exit.is_some_and(|e| e.code == Some(3)) => {}
            Ok(got) => missing.push(format!("{}: exit event {:?}", spawned.pid, got.exit)),
            Err(e) => {
                missing.push(format!("{}: no exit event to the attached client ({e})", spawned.pid))
            }
        }
        let answered = frames.iter().any(|f| {
            f.id() == wait_id
                && f.kind() == "exited"
                && f.header.get("code").and_then(|c| c.as_u64()) == Some(3)
        });
        if !answered {
            missing.push(format!("{}: pending wait (id {wait_id}) not answered", spawned.pid));
        }
    }
    ensure!(
        missing.is_empty(),
        "{} of {} final frames were lost at shutdown:\n{}",
        missing.len(),
        2 * SESSIONS,
        missing.join("\n")
    );
    Ok(())
}

#[tokio::test]
async fn the_socket_directory_and_socket_are_private() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("ptyd-perm-").tempdir()?;
    let parent = dir.path().join("runtime");
    let sockdir = parent.join("ptyd");
    let path = sockdir.join("ptyd.sock");
    ensure!(!parent.exists());

    let daemon = Daemon::start(DaemonOptions::new().socket(&path)).await?;
    ensure!(mode(&sockdir)? == 0o700, "socket directory mode {:o}", mode(&sockdir)?);
    ensure!(mode(&parent)? == 0o700, "created parent directory mode {:o}", mode(&parent)?);
    ensure!(
        std::fs::symlink_metadata(&path)?.file_type().is_socket(),
        "{} is not a socket",
        path.display()
    );
    ensure!(mode(&path)? == 0o600, "socket mode {:o}", mode(&path)?);
    daemon.try_client().await?.list().await?;
    Ok(())
}
