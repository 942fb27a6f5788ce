//! The Python client printed in `ipc-proto/PROTOCOL.md` runs as documented against a
//! real daemon, so the documentation cannot drift from the wire format.

use std::process::Stdio;

use anyhow::{ensure, Context, Result};
use ptyd_tests::{Daemon, DaemonOptions, TIMEOUT};

#[tokio::test]
async fn the_documented_python_client_spawns_and_reads_echo() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let code = ptyd_tests::docs::python_client()?;
    let script = daemon.dir().join("client.py");
    std::fs::write(&script, &code)?;

    let child = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(daemon.socket())
        .env("PTYD_SOCKET", daemon.socket())
        .current_dir(daemon.dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot run python3 (is it installed and in PATH?)")?;
    let out = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .context("the Python client did not finish")??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "the Python client failed with {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    ensure!(
        stdout.contains("hello from python"),
        "expected \"hello from python\" in the output\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );

    // The session it started really ran in the daemon and exited cleanly.
    let list = daemon.try_client().await?.list().await?;
    let echo: Vec<_> = list.sessions.iter().filter(|s| s.command == "echo").collect();
    ensure!(
        echo.len() == 1 && echo[0].exit.is_some_and(|e| e.code == Some(0)),
        "expected one exited echo session, got {list:?}"
    );
    Ok(())
}
