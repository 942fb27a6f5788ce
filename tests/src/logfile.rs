//! The log file a test process writes: read it whole, show its tail, wait for a line.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};

/// The whole log (empty when it does not exist yet).
pub fn read(path: &Path) -> String {
    std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// The last `n` lines of the log.
pub fn tail(path: &Path, n: usize) -> String {
    let log = read(path);
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits until the log contains `needle` and returns it; fails after `timeout` with the
/// last `tail_lines` lines, naming `who` wrote it.
pub async fn wait_for(
    path: &Path,
    who: &str,
    needle: &str,
    timeout: Duration,
    tail_lines: usize,
) -> Result<String> {
    let mut log = String::new();
    if crate::wait_until_async(timeout, || {
        log = read(path);
        log.contains(needle)
    })
    .await
    {
        return Ok(log);
    }
    bail!(
        "{who} did not log {needle:?} within {timeout:?}; last log lines:\n{}",
        tail(path, tail_lines)
    )
}
