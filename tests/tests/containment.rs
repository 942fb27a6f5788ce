//! Nothing a session starts escapes it: processes that leave its process group (`setsid`,
//! a double fork) still end with the session, because every session runs in a cgroup
//! of its own; the session counts as ended only once that cgroup is empty, and the
//! cgroup is gone by then. Without cgroups (`--cgroup off`) ptyd says so and still works.
//!
//! Tests that need cgroups print why they skip on a machine where ptyd falls back.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use ipc_proto::{Client, SessionId, SpawnRequest};
use ptyd_tests::procfs::{cgroup_dir, cgroup_procs, child_cgroups, proc_stat};
use ptyd_tests::{
    pids_with_cmdline, process_alive, wait_until_async, Daemon, DaemonOptions, TIMEOUT,
};

/// A unique `sleep` argument, so the test finds exactly its own processes.
fn marker(tag: u32) -> String {
    format!("1000.{}{tag}", std::process::id())
}

/// A shell script that leaves two processes outside its process group, each ignoring
/// SIGHUP and writing its real pid to `<dir>/<name>.pid`: one started with `setsid`, one
/// double-forked (its parent exits at once) and then `setsid`. `tail` ends the script.
fn escaping_script(dir: &Path, sleep: &str, tail: &str) -> String {
    let d = dir.display();
    let escape = |name: &str| {
        format!("setsid sh -c 'trap \"\" HUP; echo $$ > {d}/{name}.tmp; mv {d}/{name}.tmp {d}/{name}.pid; exec sleep {sleep}'")
    };
    format!(
        "{} &\n( ( {} & ) & )\nwhile [ ! -e {d}/setsid.pid ] || [ ! -e {d}/double.pid ]; do sleep 0.01; done\necho started\n{tail}\n",
        escape("setsid"),
        escape("double"),
    )
}

/// The two escapees' pids, once both have written them.
async fn escapees(dir: &Path) -> Result<Vec<u32>> {
    let files = [dir.join("setsid.pid"), dir.join("double.pid")];
    ensure!(
        wait_until_async(TIMEOUT, || files.iter().all(|f| f.exists())).await,
        "the escapees never wrote their pids"
    );
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f)?;
            text.trim().parse::<u32>().with_context(|| format!("{}: {text:?}", f.display()))
        })
        .collect()
}

/// The daemon's cgroup subtree, or `None` (after saying why) when it runs without one.
fn subtree_or_skip(daemon: &Daemon, test: &str) -> Option<PathBuf> {
    let subtree = daemon.cgroup_subtree();
    if subtree.is_none() {
        eprintln!(
            "skipping {test}: ptyd runs without cgroups here (no writable cgroup v2 \
             hierarchy); its log says why:\n{}",
            daemon.log_tail(20)
        );
    }
    subtree
}

/// Checks the escapees really left the session's process group and session but not its
/// cgroup, so that the test exercises what it claims to.
fn ensure_escaped(pids: &[u32], session_pid: u32, cgroup: &Path) -> Result<()> {
    for pid in pids {
        let stat = proc_stat(*pid).with_context(|| format!("escapee {pid} is gone already"))?;
        ensure!(
            stat.pgrp != session_pid && stat.session != session_pid,
            "escapee {pid} did not leave the session's group: {stat:?}"
        );
        ensure!(
            cgroup_dir(*pid).as_deref() == Some(cgroup),
            "escapee {pid} is in {:?}, not the session's cgroup {}",
            cgroup_dir(*pid),
            cgroup.display()
        );
    }
    Ok(())
}

/// After the session has ended: nothing of it runs, its slot is free, its cgroup gone.
/// The session counts as ended only once its cgroup is empty, so none of this is polled.
async fn ensure_all_gone(client: &Client, pids: &[u32], cgroup: &Path) -> Result<()> {
    let alive: Vec<_> = pids.iter().filter(|p| process_alive(**p)).collect();
    ensure!(alive.is_empty(), "still running after the session ended: {alive:?}");
    ensure!(!cgroup.exists(), "the session's cgroup {} is still there", cgroup.display());
    let list = client.list().await?;
    ensure!(list.active == 0, "{} sessions still count as active", list.active);
    Ok(())
}

#[tokio::test]
async fn killing_a_session_kills_what_left_its_process_group() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().kill_grace("200ms")).await?;
    let Some(_) = subtree_or_skip(&daemon, "killing_a_session_kills_what_left_its_process_group")
    else {
        return Ok(());
    };
    let client = daemon.client().await;
    let dir = tempfile::tempdir()?;
    let sleep = marker(1);
    let script = escaping_script(dir.path(), &sleep, &format!("exec sleep {sleep}"));
    let spawned = client.spawn(SpawnRequest::new("sh", ["-c", script.as_str()])).await?;
    let cgroup = daemon.session_cgroup(spawned.session).context("no session cgroup")?;
    ensure!(cgroup.is_dir(), "no cgroup {} for the running session", cgroup.display());
    let pids = escapees(dir.path()).await?;
    ensure_escaped(&pids, spawned.pid, &cgroup)?;

    client.kill(spawned.session, None).await?;
    let status = client.wait(spawned.session, Some(TIMEOUT)).await?;
    ensure!(status.signal.is_some(), "a killed session reports its signal, got {status:?}");
    ensure_all_gone(&client, &pids, &cgroup).await?;
    ensure!(pids_with_cmdline(&sleep).is_empty(), "{:?}", pids_with_cmdline(&sleep));
    Ok(())
}

#[tokio::test]
async fn a_shell_that_exits_takes_what_left_its_group_with_it() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().kill_grace("200ms")).await?;
    let Some(_) = subtree_or_skip(&daemon, "a_shell_that_exits_takes_what_left_its_group_with_it")
    else {
        return Ok(());
    };
    let client = daemon.client().await;
    let dir = tempfile::tempdir()?;
    let sleep = marker(2);
    // The shell waits for a line, so the test can check the escapees before it exits.
    let script = escaping_script(dir.path(), &sleep, "read x; exit 7");
    let spawned = client.spawn(SpawnRequest::new("sh", ["-c", script.as_str()])).await?;
    let cgroup = daemon.session_cgroup(spawned.session).context("no session cgroup")?;
    let pids = escapees(dir.path()).await?;
    ensure_escaped(&pids, spawned.pid, &cgroup)?;

    client.input(spawned.session, &b"\n"[..]).await?;
    let status = client.wait(spawned.session, Some(TIMEOUT)).await?;
    ensure!(status.code == Some(7), "wait reports the shell's own exit code, got {status:?}");
    ensure_all_gone(&client, &pids, &cgroup).await?;
    Ok(())
}

#[tokio::test]
async fn twelve_sessions_of_four_slots_leave_nothing_running() -> Result<()> {
    let mut daemon = Daemon::start(DaemonOptions::new().capacity(4).kill_grace("200ms")).await?;
    let Some(subtree) =
        subtree_or_skip(&daemon, "twelve_sessions_of_four_slots_leave_nothing_running")
    else {
        return Ok(());
    };
    let client = daemon.client().await;
    let dir = tempfile::tempdir()?;
    let sleep = marker(3);
    let mut pids = Vec::new();
    for round in 0..3 {
        // A full pool each round: the slots of the round before must all be back.
        let mut sessions: Vec<SessionId> = Vec::new();
        for i in 0..4 {
            let file = dir.path().join(format!("{round}-{i}.pid"));
            let f = file.display();
            let script = format!(
                "setsid sh -c 'trap \"\" HUP; echo $$ > {f}.tmp; mv {f}.tmp {f}; exec sleep {sleep}' &\n\
                 while [ ! -e {f} ]; do sleep 0.01; done; exit 0"
            );
            sessions.push(
                client.spawn(SpawnRequest::new("sh", ["-c", script.as_str()])).await?.session,
            );
        }
        for (i, session) in sessions.into_iter().enumerate() {
            let status = client.wait(session, Some(TIMEOUT)).await?;
            ensure!(status.code == Some(0), "round {round} session {i}: {status:?}");
            let file = dir.path().join(format!("{round}-{i}.pid"));
            pids.push(std::fs::read_to_string(&file)?.trim().parse::<u32>()?);
        }
    }
    ensure!(pids.len() == 12, "{pids:?}");
    let alive: Vec<_> = pids.iter().filter(|p| process_alive(**p)).collect();
    ensure!(alive.is_empty(), "escapees outlived their sessions: {alive:?}");
    ensure!(pids_with_cmdline(&sleep).is_empty(), "{:?}", pids_with_cmdline(&sleep));
    ensure!(client.list().await?.active == 0, "slots still in use");
    let left = child_cgroups(&subtree, "session-");
    ensure!(left.is_empty(), "session cgroups left behind: {left:?}");

    // A stopped daemon removes its subtree too.
    drop(client);
    daemon.stop().await?;
    ensure!(!subtree.exists(), "{} outlived the daemon", subtree.display());
    Ok(())
}

#[tokio::test]
async fn with_cgroup_off_ptyd_says_it_falls_back_and_sessions_still_work() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("ptyd.toml");
    std::fs::write(&file, "[daemon]\ncgroup = \"off\"\n")?;
    for opts in [
        DaemonOptions::new().args(["--cgroup", "off"]),
        DaemonOptions::new().env("PTYD_CGROUP", "off"),
        DaemonOptions::new().args(["--config", file.to_str().unwrap_or_default()]),
    ] {
        let daemon = Daemon::start(opts.kill_grace("200ms")).await?;
        let log = daemon.wait_for_log("falling back to process groups", TIMEOUT).await?;
        ensure!(log.contains("--cgroup off"), "the fallback names its reason:\n{log}");
        ensure!(daemon.cgroup_subtree().is_none(), "a cgroup subtree despite --cgroup off");
        let client = daemon.client().await;
        let spawned = client.spawn(SpawnRequest::new("sh", ["-c", "echo hi; exit 3"])).await?;
        let status = client.wait(spawned.session, Some(TIMEOUT)).await?;
        ensure!(status.code == Some(3), "{status:?}");
        ensure!(client.list().await?.active == 0);
    }
    Ok(())
}

/// A cgroup of this test's own that the test process moves into, so that the ptyds it
/// starts there see only the subtrees this test makes (ptyds of other tests, starting
/// in parallel, clean up their own base). Moves the process back and removes the cgroup
/// on drop.
struct PrivateBase {
    dir: PathBuf,
    home: PathBuf,
}

impl PrivateBase {
    fn enter() -> Result<Option<PrivateBase>> {
        let home = cgroup_dir(std::process::id()).context("no cgroup v2 for this process")?;
        let dir = home.join(format!("ptyd-tests-{}", std::process::id()));
        if let Err(e) = std::fs::create_dir(&dir) {
            eprintln!("skipping: cannot create {}: {e}", dir.display());
            return Ok(None);
        }
        let base = PrivateBase { dir, home };
        std::fs::write(base.dir.join("cgroup.procs"), std::process::id().to_string())
            .with_context(|| format!("moving the test into {}", base.dir.display()))?;
        Ok(Some(base))
    }
}

impl Drop for PrivateBase {
    fn drop(&mut self) {
        let _ = std::fs::write(self.home.join("cgroup.procs"), std::process::id().to_string());
        ptyd_tests::procfs::kill_and_remove_cgroup(&self.dir);
    }
}

#[tokio::test]
async fn a_ptyd_that_starts_removes_the_subtree_of_one_that_is_gone() -> Result<()> {
    let probe = Daemon::start(DaemonOptions::new()).await?;
    let test = "a_ptyd_that_starts_removes_the_subtree_of_one_that_is_gone";
    if subtree_or_skip(&probe, test).is_none() {
        return Ok(());
    }
    drop(probe);
    let Some(base) = PrivateBase::enter()? else { return Ok(()) };
    // What a ptyd killed without a chance to clean up leaves: its subtree, a session
    // cgroup in it and a process in that.
    let dead_pid = {
        let mut child = std::process::Command::new("true").spawn()?;
        child.wait()?;
        child.id()
    };
    let stale = base.dir.join(format!("ptyd-{dead_pid}"));
    let session = stale.join("session-stale");
    std::fs::create_dir_all(&session)?;
    let mut sleeper = std::process::Command::new("sleep").arg(marker(4)).spawn()?;
    std::fs::write(session.join("cgroup.procs"), sleeper.id().to_string())?;
    ensure!(cgroup_procs(&session) == [sleeper.id()], "{:?}", cgroup_procs(&session));

    // The cleanup happens before the daemon is ready.
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    ensure!(!stale.exists(), "{} survived a new ptyd's start", stale.display());
    ensure!(
        daemon.log().contains("removed the cgroup subtree of a ptyd that is gone"),
        "the removal is logged:\n{}",
        daemon.log()
    );
    let mut reaped = None;
    ensure!(
        wait_until_async(TIMEOUT, || {
            reaped = sleeper.try_wait().ok().flatten();
            reaped.is_some()
        })
        .await,
        "the stale session's process survived a new ptyd's start"
    );
    ensure!(reaped.is_some_and(|s| s.code().is_none()), "it was killed, not ended: {reaped:?}");
    drop(daemon);
    drop(base);
    Ok(())
}
