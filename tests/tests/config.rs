//! ptyd's settings come from flags, PTYD_* variables and a TOML file, in that order.

use anyhow::{ensure, Result};
use ipc_proto::{ErrorCode, SpawnRequest};
use ptyd_tests::{ptyd_bin, Daemon, DaemonOptions};

#[tokio::test]
async fn the_toml_file_sets_the_daemon_and_flags_win_over_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("ptyd.toml");
    std::fs::write(
        &file,
        "[daemon]\ncapacity = 1\nkill_grace = \"150ms\"\n\n[bridge]\nlisten = \"127.0.0.1:0\"\n",
    )?;

    let daemon =
        Daemon::start(DaemonOptions::new().args(["--config", file.to_str().unwrap_or_default()]))
            .await?;
    let client = daemon.client().await;
    client.spawn(SpawnRequest::new("sleep", ["30"])).await?;
    let err = client.spawn(SpawnRequest::new("sleep", ["30"])).await.unwrap_err();
    ensure!(err.code() == Some(ErrorCode::AtCapacity) && err.to_string().ends_with("(1)"), "{err}");
    drop(daemon);

    // The environment beats the file, and a flag beats the environment.
    let daemon = Daemon::start(
        DaemonOptions::new()
            .env("PTYD_CAPACITY", "3")
            .args(["--config", file.to_str().unwrap_or_default()]),
    )
    .await?;
    ensure!(daemon.client().await.list().await?.capacity == 3);
    drop(daemon);
    let daemon = Daemon::start(DaemonOptions::new().env("PTYD_CAPACITY", "3").args([
        "--config",
        file.to_str().unwrap_or_default(),
        "--capacity",
        "5",
    ]))
    .await?;
    ensure!(daemon.client().await.list().await?.capacity == 5);
    Ok(())
}

#[test]
fn a_bad_config_file_is_a_clear_startup_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[daemon]\ncapacity = \"many\"\n")?;
    let out = std::process::Command::new(ptyd_bin()?)
        .args(["--config", file.to_str().unwrap_or_default(), "--socket"])
        .arg(dir.path().join("s.sock"))
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "ptyd started with a bad config");
    ensure!(stderr.contains("bad.toml") && stderr.contains("capacity"), "{stderr}");
    Ok(())
}

#[test]
fn help_documents_every_flag_and_its_variable() -> Result<()> {
    let out = std::process::Command::new(ptyd_bin()?).arg("--help").output()?;
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--socket",
        "--capacity",
        "--replay-bytes",
        "--idle-timeout",
        "--kill-grace",
        "--retention",
        "--allow-group",
        "--log-format",
        "--config",
    ] {
        ensure!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    for var in ["PTYD_SOCKET", "PTYD_CAPACITY", "PTYD_IDLE_TIMEOUT", "PTYD_CONFIG"] {
        ensure!(help.contains(var), "--help lacks {var}");
    }
    Ok(())
}

#[tokio::test]
async fn json_logs_carry_the_session_span() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().args(["--log-format", "json"])).await?;
    let client = daemon.client().await;
    let spawned = client.spawn(SpawnRequest::new("true", Vec::<String>::new())).await?;
    client.wait(spawned.session, Some(ptyd_tests::TIMEOUT)).await?;
    let id = spawned.session.to_string();
    ensure!(
        ptyd_tests::wait_until_async(ptyd_tests::TIMEOUT, || daemon
            .log()
            .contains("released pty slot"))
        .await,
        "no end-of-session line"
    );
    let line = daemon
        .log()
        .lines()
        .find(|l| l.contains("released pty slot"))
        .map(str::to_string)
        .unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(&line)?;
    ensure!(json["span"]["session_id"] == id.as_str(), "session span missing: {line}");
    Ok(())
}
