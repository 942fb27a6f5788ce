//! What the screen model costs, measured in one run against ptyd with `--screen off`.
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p ptyd-tests --bench screen`
//!
//! - 64 MiB of `cat` output through a lossless attach, screen on beside screen off
//!   (median of 5 interleaved runs each), as one endless line and as text lines.
//! - ptyd's RSS per idle `bash` at 80×24 with the default scrollback (1000 lines), for
//!   500 shells (`SCREEN_SHELLS` to change), screen on beside off.
//! - `screen` snapshot time (with `ansi`, full history) p50/p99 at 80×24 and 200×50, once
//!   1000 lines of coloured history are kept.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ipc_proto::{AttachMode, Client, SessionEvent, SessionId, SpawnRequest};
use ptyd_tests::{rss_bytes, Daemon, DaemonOptions};

const BULK: usize = 64 * 1024 * 1024;
const SNAPSHOTS: usize = 200;
const THROUGHPUT_RUNS: usize = 5;

#[tokio::main]
async fn main() -> Result<()> {
    let shells: usize =
        std::env::var("SCREEN_SHELLS").ok().and_then(|n| n.parse().ok()).unwrap_or(500);
    let start = |screen: &'static str| {
        Daemon::start(DaemonOptions::new().env("RUST_LOG", "warn").args([
            "--screen",
            screen,
            "--capacity",
            "1000",
            "--idle-timeout",
            "0",
        ]))
    };
    let on = start("on").await?;
    let off = start("off").await?;
    println!("ptyd {:?}", ptyd_tests::ptyd_bin()?);

    for (what, script) in [
        (
            "64 MiB cat through attach, screen on",
            format!("head -c {BULK} /dev/zero | tr '\\0' 'x'"),
        ),
        (
            "64 MiB of text lines, screen on",
            format!(
                "yes 'a line of a long log, as programs print them: 0123456789' | head -c {BULK}"
            ),
        ),
    ] {
        // Interleaved, the median of each: this machine's other load moves single runs.
        let (mut t_on, mut t_off) = (Vec::new(), Vec::new());
        for _ in 0..THROUGHPUT_RUNS {
            t_off.push(throughput(&off.client().await, &script).await?);
            t_on.push(throughput(&on.client().await, &script).await?);
        }
        let (t_on, t_off) = (median(t_on), median(t_off));
        println!(
            "{:<44} {:>8.1} MiB/s   screen off {:>8.1} MiB/s   ratio {:.2}",
            what,
            t_on,
            t_off,
            t_on / t_off
        );
    }

    let per_on = idle_cost(&on, shells).await?;
    let per_off = idle_cost(&off, shells).await?;
    println!(
        "{:<44} {:>8.1} KiB     screen off {:>8.1} KiB     {} shells: {:.1} MiB of ptyd",
        "ptyd RSS per idle 80x24 bash, screen on",
        per_on / 1024.0,
        per_off / 1024.0,
        shells,
        per_on * shells as f64 / (1024.0 * 1024.0)
    );
    drop(off);

    let client = on.client().await;
    for (cols, rows) in [(80, 24), (200, 50)] {
        let (p50, p99, bytes) = snapshot_times(&client, cols, rows).await?;
        println!(
            "{:<44} p50 {:>7.0} µs   p99 {:>7.0} µs   {} KiB",
            format!("screen snapshot {cols}x{rows}, 1000 lines of history"),
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            bytes / 1024
        );
    }
    Ok(())
}

async fn throughput(client: &Client, script: &str) -> Result<f64> {
    let t = Instant::now();
    let (_, mut att) = client
        .spawn_attached(SpawnRequest::new("sh", ["-c", script]), AttachMode { lossless: true })
        .await?;
    let mut got = 0;
    while let Some(ev) = att.next().await {
        if let SessionEvent::Output { data, .. } = ev {
            got += data.len();
        }
    }
    anyhow::ensure!(got >= BULK, "received {got} of {BULK} bytes");
    Ok(got as f64 / (1024.0 * 1024.0) / t.elapsed().as_secs_f64())
}

/// ptyd's RSS growth per idle shell, the shells' own memory excluded.
async fn idle_cost(daemon: &Daemon, n: usize) -> Result<f64> {
    let client = daemon.client().await;
    let before = rss_bytes(daemon.pid()).context("rss")? as f64;
    let mut ids: Vec<SessionId> = Vec::new();
    for _ in 0..n {
        let req = SpawnRequest::new("bash", ["--norc", "--noprofile", "-i"]);
        ids.push(client.spawn(req).await?.session);
    }
    for id in &ids {
        client.wait_for(*id, r"[$#] $", Some(0), Some(Duration::from_secs(30))).await?;
    }
    let after = rss_bytes(daemon.pid()).context("rss")? as f64;
    for id in ids {
        client.kill(id, None).await?;
    }
    Ok((after - before) / n as f64)
}

async fn snapshot_times(
    client: &Client,
    cols: u16,
    rows: u16,
) -> Result<(Duration, Duration, usize)> {
    let script = r#"i=0; while [ $i -lt 1200 ]; do printf '\033[3%dmline %d\033[m of coloured history\n' $((i % 7 + 1)) $i; i=$((i+1)); done; exec sleep 100"#;
    let mut req = SpawnRequest::new("sh", ["-c", script]);
    (req.cols, req.rows) = (cols, rows);
    let s = client.spawn(req).await?.session;
    client.wait_for(s, "line 1199", Some(0), Some(Duration::from_secs(30))).await?;
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..SNAPSHOTS {
        let t = Instant::now();
        let (_, ansi) = client.screen(s, 1000, true).await?;
        times.push(t.elapsed());
        bytes = ansi.len();
    }
    client.kill(s, None).await?;
    times.sort();
    Ok((times[times.len() / 2], times[times.len() * 99 / 100], bytes))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
