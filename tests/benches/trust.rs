//! The cost of the trust work, measured in one run.
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p ptyd-tests --bench trust`
//! (`TRUST_SESSIONS=40000` for the churn count; default 40000, about three minutes here).
//!
//! - Browser terminal opens per second (`POST /api/terminals`, then a WebSocket up to its
//!   `hello`, then `DELETE`) through a bridge with authentication (bearer token, a ticket
//!   per socket) beside one with `--no-auth`, interleaved against one ptyd.
//! - Short sessions (`true`, spawn then wait) one after another: the rate per batch and
//!   ptyd's RSS as exited sessions pile up under the retention bounds, beside forking
//!   `true` in this process (the ceiling).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ipc_proto::SpawnRequest;
use ptyd_tests::bridge::{Bridge, WsClient};
use ptyd_tests::{rss_bytes, Daemon, DaemonOptions};

const OPENS: usize = 200;

#[tokio::main]
async fn main() -> Result<()> {
    let daemon =
        Daemon::start(DaemonOptions::new().env("RUST_LOG", "warn").args(["--capacity", "64"]))
            .await?;
    println!("ptyd {:?} (pid {})", ptyd_tests::ptyd_bin()?, daemon.pid());
    terminal_opens(&daemon).await?;
    drop(daemon);
    churn().await
}

async fn open_once(bridge: &Bridge, ticket: bool) -> Result<()> {
    let r = bridge.post("/api/terminals", "").await?;
    anyhow::ensure!(r.status == 201, "create: {r:?}");
    let id = r.json()?["id"].as_str().context("id")?.to_string();
    let path = if ticket {
        let t = bridge.post(&format!("/api/terminals/{id}/ticket"), "").await?.json()?;
        format!("/ws/terminal/{id}?ticket={}", t["ticket"].as_str().context("ticket")?)
    } else {
        format!("/ws/terminal/{id}")
    };
    let ws = WsClient::new(bridge.upgrade_anonymous(&path, &[]).await?).await?;
    ws.close().await?;
    let r = bridge.delete(&format!("/api/terminals/{id}")).await?;
    anyhow::ensure!(r.status == 200, "delete: {r:?}");
    Ok(())
}

async fn terminal_opens(daemon: &Daemon) -> Result<()> {
    let env = [("RUST_LOG", "warn")];
    let authed = Bridge::start_with_env(daemon.socket(), &["--no-spawn-daemon"], &env).await?;
    let open =
        Bridge::start_with_env(daemon.socket(), &["--no-spawn-daemon", "--no-auth"], &env).await?;
    let (mut with, mut without) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..OPENS {
        let t = Instant::now();
        open_once(&authed, true).await?;
        with += t.elapsed();
        let t = Instant::now();
        open_once(&open, false).await?;
        without += t.elapsed();
    }
    let rate = |d: Duration| OPENS as f64 / d.as_secs_f64();
    println!(
        "{:<44} {:>8.1}/s   --no-auth {:>8.1}/s   ratio {:.2}",
        "terminal open (create, ticket, ws, delete)",
        rate(with),
        rate(without),
        rate(with) / rate(without)
    );
    Ok(())
}

async fn churn() -> Result<()> {
    let total: usize =
        std::env::var("TRUST_SESSIONS").ok().and_then(|n| n.parse().ok()).unwrap_or(40_000);
    let batch = (total / 8).max(1);
    let daemon = Daemon::start(DaemonOptions::new().env("RUST_LOG", "warn")).await?;
    let client = daemon.client().await;
    let rss = |pid| rss_bytes(pid).unwrap_or(0) as f64 / (1024.0 * 1024.0);
    println!(
        "{} short sessions, default retention bounds; ptyd RSS at start {:.1} MiB",
        total,
        rss(daemon.pid())
    );
    let ceiling = fork_rate(500)?;
    let mut done = 0;
    while done < total {
        let n = batch.min(total - done);
        let t = Instant::now();
        for _ in 0..n {
            let s = client.spawn(SpawnRequest::new("true", Vec::<String>::new())).await?;
            client.wait(s.session, None).await?;
        }
        done += n;
        let rate = n as f64 / t.elapsed().as_secs_f64();
        let list = client.list().await?;
        println!(
            "  after {:>6}: {:>7.1} sessions/s (fork+exec+wait in-process {:>7.1}/s, ratio {:.2}), \
             ptyd RSS {:>6.1} MiB, {} retained",
            done,
            rate,
            ceiling,
            rate / ceiling,
            rss(daemon.pid()),
            list.sessions.len()
        );
    }
    Ok(())
}

/// Runs of `true` per second, forked and waited for by this process (no PTY).
fn fork_rate(n: usize) -> Result<f64> {
    let t = Instant::now();
    for _ in 0..n {
        std::process::Command::new("true").status()?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}
