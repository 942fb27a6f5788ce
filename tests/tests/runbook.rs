//! RUNBOOK.md stays true: an entry per error and state the spec names, every test it
//! names exists, every ptyctl subcommand and flag it mentions is real, every metric it
//! mentions is exported, every log line it quotes is one the code writes, and its
//! read-only diagnostics run against a live daemon and bridge.

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use ptyd_tests::bridge::Bridge;
use ptyd_tests::{bin_path, workspace_root, Daemon, DaemonOptions};
use regex::Regex;

fn runbook() -> Result<String> {
    std::fs::read_to_string(workspace_root().join("RUNBOOK.md")).context("reading RUNBOOK.md")
}

/// Every `.rs` file under `dir`, concatenated.
fn sources(dir: &str) -> Result<String> {
    let mut all = String::new();
    let mut stack = vec![workspace_root().join(dir)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                all.push_str(&std::fs::read_to_string(&path)?);
            }
        }
    }
    Ok(all)
}

/// The runbook's code: fenced blocks and inline spans, one per line.
fn code_of(text: &str) -> Result<String> {
    let fenced = Regex::new(r"(?s)```[a-z]*\n(.*?)```")?;
    let mut code: Vec<String> = fenced.captures_iter(text).map(|c| c[1].to_string()).collect();
    let prose = fenced.replace_all(text, "");
    let inline = Regex::new(r"`([^`]+)`")?;
    code.extend(inline.captures_iter(&prose).map(|c| c[1].replace('\n', " ")));
    Ok(code.join("\n"))
}

fn help(bin: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(bin_path(bin)?).args(args).arg("--help").output()?;
    ensure!(out.status.success(), "{bin} {args:?} --help failed: {out:?}");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn every_error_and_state_has_an_entry() -> Result<()> {
    let text = runbook()?;
    for heading in [
        "## Start here",
        "## AtCapacity",
        "## HandleNotFound",
        "## SpawnFailed",
        "## IpcError",
        "## TransportError",
        "## Heartbeat timeout",
        "## Grace expired / 410 Gone",
        "## Idle timeout",
        "## Unauthorized, locked out or misdirected",
        "## Upgrading ptyd (UpgradeFailed, Upgrading)",
        "## Post-incident template",
    ] {
        ensure!(text.lines().any(|l| l == heading), "RUNBOOK.md has no {heading:?} section");
    }
    // Each entry says how it shows, what to run, how to recover, and its test; and no
    // recovery reaches for a blunt instrument.
    for entry in text.split("\n## ").skip(2).filter(|e| !e.starts_with("Post-incident")) {
        let name = entry.lines().next().unwrap_or_default();
        for part in ["**Shows as.**", "**Diagnose.**", "**Recover.**", "**Test.**"] {
            ensure!(entry.contains(part), "entry {name:?} lacks {part}");
        }
    }
    let body = text.split("\n## Start here").nth(1).unwrap_or_default();
    for banned in ["pkill", "killall", "reboot"] {
        ensure!(!body.contains(banned), "RUNBOOK.md suggests {banned}");
    }
    Ok(())
}

#[test]
fn every_named_test_exists() -> Result<()> {
    let text = runbook()?;
    let named = Regex::new(r"tests/tests/(\w+)\.rs::(\w+)")?;
    let mut count = 0;
    for cap in named.captures_iter(&text) {
        let path = workspace_root().join(format!("tests/tests/{}.rs", &cap[1]));
        let source = std::fs::read_to_string(&path).with_context(|| format!("{path:?}"))?;
        ensure!(source.contains(&format!("fn {}(", &cap[2])), "{} names a missing test", &cap[0]);
        count += 1;
    }
    ensure!(count >= 8, "only {count} tests named");
    Ok(())
}

#[test]
fn every_ptyctl_subcommand_and_flag_is_real() -> Result<()> {
    let text = runbook()?;
    let code = code_of(&text)?;
    let sub = Regex::new(r"(?m)^\s*ptyctl ([a-z][a-z-]*)")?;
    let subs: BTreeSet<&str> =
        sub.captures_iter(&code).map(|c| c.get(1).unwrap().as_str()).collect();
    ensure!(subs.contains("doctor") && subs.contains("ls"), "{subs:?}");
    let mut known = help("ptyctl", &[])?;
    for s in &subs {
        known.push_str(&help("ptyctl", &[s])?);
    }
    known.push_str(&help("ptyd", &[])?);
    known.push_str(&help("ptyd-bridge", &[])?);
    // Flags of the other tools the runbook uses.
    let others = ["--since", "--value", "--user", "--test", "--help", "--json"];
    let flag = Regex::new(r"(?:^|[\s`(])(--[a-z][a-z-]+)")?;
    for cap in flag.captures_iter(&text) {
        let f = &cap[1];
        ensure!(others.contains(&f) || known.contains(f), "RUNBOOK.md mentions unknown flag {f}");
    }
    // Environment variables it tells operators to set.
    let var = Regex::new(r"\b(PTYD_[A-Z_]+)=")?;
    for cap in var.captures_iter(&text) {
        ensure!(known.contains(&format!("{}=", &cap[1])), "unknown variable {}", &cap[1]);
    }
    Ok(())
}

#[test]
fn every_quoted_log_line_is_written_by_the_code() -> Result<()> {
    let text = runbook()?;
    let code = sources("daemon/src")? + &sources("bridge/src")? + &sources("ipc-proto/src")?;
    for line in [
        "pool is at capacity",
        "pty spawn failed",
        "cannot create a terminal",
        "ptyd is not reachable",
        "lost the connection to ptyd",
        "connected to ptyd",
        "refused peer uid",
        "WebSocket disconnected for terminal",
        "transport error",
        "Sending heartbeat ping (frame",
        "Pong timeout after",
        "Heartbeat failure detected, closing connection",
        "Grace period expired (",
        "Killing PTY process for terminal",
        "Reconnect attempt received, returning 410 Gone",
        "No data received for",
        "Idle timeout reached, closing WebSocket",
        "session idle with no client attached or lease held; killing it",
        "session ended; released pty slot",
        "Status transition:",
        "refused a request with a wrong credential",
        "locked out after repeated wrong credentials",
        "refused a request for a foreign host",
        "authentication is disabled (--no-auth)",
        "authentication: generated a token in",
        "sessions run in cgroups of their own",
        "falling back to process groups",
        "removed the cgroup subtree of a ptyd that is gone",
        "closing connection: ",
        "(ipc idle timeout)",
        "is still unfinished (frame timeout",
        "unfinished frames from all clients would hold more than",
        "sessions carried",
        "upgrade failed: ",
        "closing connection: ptyd is upgrading",
        "handing over to ",
    ] {
        ensure!(text.contains(line), "RUNBOOK.md does not quote {line:?}");
        ensure!(code.contains(line), "no code logs {line:?}, yet RUNBOOK.md quotes it");
    }
    Ok(())
}

/// The diagnostics of "Start here", for real.
#[tokio::test]
async fn the_diagnostics_run_against_a_live_daemon_and_bridge() -> Result<()> {
    let text = runbook()?;
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge = Bridge::start(daemon.socket(), &[]).await?;
    bridge.create("").await?;
    for args in [&["doctor"][..], &["ls"], &["ls", "--json"]] {
        ensure!(text.contains(&format!("ptyctl {}", args.join(" "))), "{args:?} not in RUNBOOK");
        let out = daemon.ptyctl(args).output()?;
        ensure!(out.status.success(), "ptyctl {args:?}: {out:?}");
    }
    for path in ["/readyz", "/metrics", "/api/terminals"] {
        ensure!(text.contains(&format!("http://127.0.0.1:3000{path}")), "{path} not in RUNBOOK");
        let r = bridge.get(path).await?;
        ensure!(r.status == 200, "GET {path}: {r:?}");
    }
    let metrics = bridge.get("/metrics").await?.body;
    let metric = Regex::new(r"ptyd_bridge_[a-z_]+")?;
    for m in metric.find_iter(&text) {
        // `ptyd_bridge_` alone is the grep prefix; `(a|b)` groups name several.
        let name = m.as_str();
        if name == "ptyd_bridge_" {
            continue;
        }
        ensure!(metrics.contains(name), "RUNBOOK.md names {name}, /metrics has no such series");
    }
    Ok(())
}
