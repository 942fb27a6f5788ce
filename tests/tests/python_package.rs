//! The Python client package (`clients/python`, `import ptyd`) passes its own tests
//! against a real daemon: an agent driving a Python REPL and a live shell, attachments,
//! errors named like the protocol's codes, and the asyncio client.

use std::process::Stdio;

use anyhow::{ensure, Context, Result};
use ptyd_tests::{workspace_root, Daemon, DaemonOptions, TIMEOUT};

#[tokio::test]
async fn the_python_package_passes_its_tests_against_a_real_daemon() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let package = workspace_root().join("clients/python");
    // The system interpreter: the oldest the package must run on here.
    let child = tokio::process::Command::new("/usr/bin/python3")
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(package.join("tests"))
        .env("PYTHONPATH", package.join("src"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PTYD_SOCKET", daemon.socket())
        .env("TMPDIR", daemon.dir())
        .current_dir(daemon.dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot run /usr/bin/python3")?;
    let out = tokio::time::timeout(TIMEOUT * 6, child.wait_with_output())
        .await
        .context("the Python tests did not finish")??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "the Python tests failed ({:?}):\n{stderr}", out.status);
    let ran = regex::Regex::new(r"Ran (\d+) tests?")?
        .captures(&stderr)
        .and_then(|c| c[1].parse::<u32>().ok())
        .unwrap_or(0);
    ensure!(ran >= 5 && stderr.contains("\nOK"), "ran {ran} tests:\n{stderr}");
    Ok(())
}
