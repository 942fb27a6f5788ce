//! `--session-pids-max` and `--session-memory-max` become `pids.max` and `memory.max` in
//! each session's cgroup; where the controller a limit needs is missing, ptyd refuses to
//! start and says which controller of which hierarchy it lacks.
//!
//! Which of the two tests can run depends on the machine (on a hybrid cgroup setup the
//! v2 hierarchy often lacks both controllers); the other prints why it skips.

use std::process::Command;

use anyhow::{ensure, Context, Result};
use ipc_proto::SpawnRequest;
use ptyd_tests::procfs::{cgroup2_mount, cgroup_controllers, cgroup_dir};
use ptyd_tests::{ptyd_bin, read_until, Daemon, DaemonOptions, TIMEOUT};

/// The controllers a ptyd started by this test process would find in its cgroup.
fn available_controllers() -> Vec<String> {
    cgroup_dir(std::process::id()).map(|dir| cgroup_controllers(&dir)).unwrap_or_default()
}

/// A refusal to check: the controller, and the flags and variables that ask for it.
type Case<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)]);

/// Runs ptyd until it exits (it should refuse at once); returns its exit code and stderr.
fn refused(args: &[&str], env: &[(&str, &str)]) -> Result<(Option<i32>, String)> {
    let dir = tempfile::tempdir()?;
    let mut cmd = Command::new(ptyd_bin()?);
    cmd.arg("--socket").arg(dir.path().join("ptyd.sock")).args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PTYD_")) {
            cmd.env_remove(key);
        }
    }
    let out = cmd.envs(env.iter().copied()).output()?;
    Ok((out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

#[test]
fn a_limit_whose_controller_is_missing_refuses_the_start() -> Result<()> {
    let available = available_controllers();
    let hierarchy = cgroup2_mount().map(|m| m.display().to_string());
    let dir = tempfile::tempdir()?;
    let toml = dir.path().join("ptyd.toml");
    std::fs::write(&toml, "[daemon]\nsession_pids_max = 64\n")?;
    let toml = toml.to_str().unwrap_or_default().to_string();
    let cases: [Case<'_>; 3] = [
        ("pids", &["--session-pids-max", "64"], &[]),
        ("memory", &[], &[("PTYD_SESSION_MEMORY_MAX", "256M")]),
        ("pids", &["--config", &toml], &[]),
    ];
    let mut checked = 0;
    for (controller, args, env) in cases {
        if available.iter().any(|c| c == controller) {
            eprintln!("not checking the refusal for {controller}: this cgroup offers it");
            continue;
        }
        let (code, stderr) = refused(args, env)?;
        ensure!(code == Some(2), "a configuration error exits 2, got {code:?}: {stderr}");
        let flag = format!("--session-{controller}-max needs the {controller} controller");
        ensure!(stderr.contains(&flag), "the refusal names flag and controller: {stderr}");
        if let Some(mount) = &hierarchy {
            ensure!(stderr.contains(mount.as_str()), "the refusal names {mount}: {stderr}");
        }
        checked += 1;
    }
    if checked == 0 {
        eprintln!("skipping: this cgroup offers both pids and memory ({available:?})");
    }
    // With cgroups turned off, a limit can never be enforced.
    let (code, stderr) = refused(&["--cgroup", "off", "--session-pids-max", "64"], &[])?;
    ensure!(code == Some(2), "{code:?}: {stderr}");
    ensure!(stderr.contains("--session-pids-max needs cgroup containment"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn limits_are_written_into_each_session_cgroup() -> Result<()> {
    let available = available_controllers();
    if !["pids", "memory"].iter().all(|c| available.iter().any(|a| a == c)) {
        eprintln!(
            "skipping: ptyd's cgroup here offers only {available:?}, not pids and memory \
             (the refusal is tested instead)"
        );
        return Ok(());
    }
    let daemon = Daemon::start(DaemonOptions::new().args([
        "--session-pids-max",
        "50",
        "--session-memory-max",
        "128M",
    ]))
    .await?;
    let client = daemon.client().await;
    let spawned = client.spawn(SpawnRequest::new("sh", ["-c", "echo ready; read x"])).await?;
    let mut att = client.attach(spawned.session, Some(0), false).await?;
    read_until(&mut att, "ready", TIMEOUT).await?;
    let cgroup = daemon.session_cgroup(spawned.session).context("no session cgroup")?;
    let read = |file: &str| std::fs::read_to_string(cgroup.join(file)).unwrap_or_default();
    ensure!(read("pids.max").trim() == "50", "pids.max: {:?}", read("pids.max"));
    ensure!(
        read("memory.max").trim() == (128u64 << 20).to_string(),
        "memory.max: {:?}",
        read("memory.max")
    );
    client.kill(spawned.session, None).await?;
    client.wait(spawned.session, Some(TIMEOUT)).await?;
    Ok(())
}

#[tokio::test]
async fn a_session_killed_at_its_memory_limit_says_so() -> Result<()> {
    if !available_controllers().iter().any(|c| c == "memory") {
        eprintln!("skipping: ptyd's cgroup here has no memory controller");
        return Ok(());
    }
    let daemon = Daemon::start(DaemonOptions::new().args(["--session-memory-max", "32M"])).await?;
    let client = daemon.client().await;
    // Touches 256 MiB: the kernel kills it at 32.
    let hog = "python3 -c 'b = bytearray(256 << 20); b[::4096] = b\"x\" * len(b[::4096])'";
    let s = client.spawn(SpawnRequest::new("sh", ["-c", hog])).await?.session;
    let status = client.wait(s, Some(TIMEOUT)).await?;
    let info = client.info(s).await?;
    ensure!(info.end_reason == Some(ipc_proto::EndReason::MemoryLimit), "{status:?}, {info:?}");
    Ok(())
}
