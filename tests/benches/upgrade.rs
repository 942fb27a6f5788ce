//! Live upgrade (`upgrade`): how long it takes with 10, 100 and 500 sessions, from the
//! request to the new image's answer, and the longest pause an attached client sees in
//! a session printing every millisecond (it re-attaches with `since` after the cut).
//! Beside them, measured in the same run: a fresh ptyd started until it answers, the
//! least a restart would cost (and a restart would also end every session).
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p ptyd-tests --bench upgrade`
//! (`UPGRADE_SESSIONS=10,100` changes the session counts.)

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ipc_proto::{Client, SessionEvent, SessionId, SpawnRequest};
use ptyd_tests::{Daemon, DaemonOptions};

/// Upgrades per session count.
const ROUNDS: usize = 3;

#[tokio::main]
async fn main() -> Result<()> {
    let counts: Vec<usize> = std::env::var("UPGRADE_SESSIONS")
        .unwrap_or_else(|_| "10,100,500".into())
        .split(',')
        .map(|n| n.trim().parse())
        .collect::<Result<_, _>>()
        .context("UPGRADE_SESSIONS: comma-separated counts")?;
    println!("ptyd {:?}, {} cores", ptyd_tests::ptyd_bin()?, cores());

    let mut starts = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let daemon = Daemon::start(quiet_options(16)).await?;
        starts.push(t.elapsed());
        drop(daemon);
    }
    let start = median(&mut starts);
    println!(
        "\nreference: a fresh ptyd started until it answers, median of 5: {:.1} ms",
        ms(start)
    );
    println!(
        "\n{:>8}  {:>18}  {:>18}  {:>22}",
        "sessions", "request→answer ms", "daemon says ms", "longest output pause ms"
    );
    for n in counts {
        let (answer, said, pause) = upgrades(n).await?;
        println!(
            "{n:>8}  {:>18.1}  {:>18.1}  {:>22.1}   ({:.1}× a fresh start)",
            ms(answer),
            ms(said),
            ms(pause),
            answer.as_secs_f64() / start.as_secs_f64()
        );
    }
    Ok(())
}

fn quiet_options(capacity: usize) -> DaemonOptions {
    DaemonOptions::new().env("RUST_LOG", "warn").args([
        "--capacity",
        &capacity.to_string(),
        "--idle-timeout",
        "0",
    ])
}

/// Medians over `ROUNDS` upgrades of a daemon with `n` sessions.
async fn upgrades(n: usize) -> Result<(Duration, Duration, Duration)> {
    let daemon = Daemon::start(quiet_options(n + 8)).await?;
    let client = daemon.try_client().await?;
    for _ in 0..n - 1 {
        client.spawn(SpawnRequest::new("bash", ["--norc", "--noprofile"])).await?;
    }
    let script = "i=0; while :; do echo $i; i=$((i+1)); sleep 0.001; done";
    let ticker = client.spawn(SpawnRequest::new("sh", ["-c", script])).await?.session;
    // Shells started: their first prompts are out.
    tokio::time::sleep(Duration::from_millis(200 + n as u64 * 2)).await;
    let gaps = Arc::new(Mutex::new(Vec::new()));
    let follower = tokio::spawn(follow(daemon.socket().to_path_buf(), ticker, gaps.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut answers, mut saids, mut pauses) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        gaps.lock().unwrap().clear();
        let c = Client::connect(daemon.socket()).await?;
        let t = Instant::now();
        let reply = c.upgrade(None).await?;
        answers.push(t.elapsed());
        saids.push(Duration::from_millis(reply.duration_ms));
        anyhow::ensure!(reply.sessions == n, "{} sessions carried of {n}", reply.sessions);
        // Let the follower get past the cut.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let longest = gaps.lock().unwrap().iter().copied().max().unwrap_or_default();
        pauses.push(longest);
    }
    follower.abort();
    Ok((median(&mut answers), median(&mut saids), median(&mut pauses)))
}

/// Follows `session`'s output across upgrades, recording the pauses between events.
async fn follow(socket: PathBuf, session: SessionId, gaps: Arc<Mutex<Vec<Duration>>>) {
    let mut next = None;
    let mut last = Instant::now();
    loop {
        let Ok(client) = connect(&socket).await else { return };
        let Ok(mut att) = client.attach(session, next, true).await else { continue };
        while let Some(event) = att.next().await {
            if let SessionEvent::Output { offset, data } = event {
                next = Some(offset + data.len() as u64);
                gaps.lock().unwrap().push(last.elapsed());
                last = Instant::now();
            }
        }
    }
}

async fn connect(socket: &Path) -> Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Client::connect(socket).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
