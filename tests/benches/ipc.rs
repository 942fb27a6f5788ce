//! ptyd over IPC against a PTY driven directly in this process, measured in one run.
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p ptyd-tests --bench ipc`
//! Prints spawn latency (spawn → first output byte; back to back, and 100 ms apart as a
//! person opening terminals now and then), throughput of 64 MiB of output, and 1-byte
//! echo round trips, each beside the direct-PTY ceiling (echoes also beside one process
//! that only relays bytes, the floor for any daemon in between); then spawn latency
//! with 500 sessions alive (`IPC_LIVE` to change) beside it with none, the time to open
//! them, ptyd's thread count, and the time to close them all until every one is reaped.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ipc_proto::{AttachMode, SessionEvent, SpawnRequest};
use portable_pty::{native_pty_system, CommandBuilder, PtySize};
use ptyd_tests::blocking::BlockingTerm;
use ptyd_tests::{Daemon, DaemonOptions};

const SPAWNS: usize = 100;
const SPAWNS_APART: usize = 20;
const ECHOES: usize = 2000;
const BULK: usize = 64 * 1024 * 1024;
/// The echo workload: every byte typed comes straight back.
const CAT: &str = "stty raw -echo; echo ready; exec cat";

#[path = "common/relay.rs"]
mod relay;

use relay::{Hop, Relayed};

#[tokio::main]
async fn main() -> Result<()> {
    relay::serve_if_asked();
    let daemon = Daemon::start(DaemonOptions::new().env("RUST_LOG", "warn").args([
        "--capacity",
        "1000",
        "--idle-timeout",
        "0",
    ]))
    .await?;
    let client = daemon.client().await;
    println!("ptyd {:?} (pid {})", ptyd_tests::ptyd_bin()?, daemon.pid());

    let direct = percentiles(&mut direct_spawns()?);
    let unloaded = percentiles(&mut spawns(&client).await?);
    row("spawn → first byte p50", unloaded.0, direct.0);
    row("spawn → first byte p99", unloaded.1, direct.1);
    // A person opening a terminal now and then: nothing warm from the spawn before.
    let apart = percentiles(&mut spawns_apart(&client).await?);
    row("  each 100 ms apart, p50", apart.0, direct.0);
    row("  each 100 ms apart, p99", apart.1, direct.1);

    let direct_tp = direct_throughput()?;
    let t = Instant::now();
    let (_, mut att) = client.spawn_attached(bulk_command(), AttachMode { lossless: true }).await?;
    let mut got = 0usize;
    while let Some(ev) = att.next().await {
        if let SessionEvent::Output { data, .. } = ev {
            got += data.len();
        }
    }
    anyhow::ensure!(got == BULK, "received {got} of {BULK} bytes");
    let ipc_tp = mib_per_s(got, t.elapsed());
    println!(
        "{:<28} {:>10.1} MiB/s   direct {:>10.1} MiB/s   ratio {:.2}",
        "64 MiB output",
        ipc_tp,
        direct_tp,
        ipc_tp / direct_tp
    );

    let direct = percentiles(&mut direct_echoes()?);
    let floor = percentiles(&mut relayed_echoes()?);
    let cat = client.spawn(SpawnRequest::new("sh", ["-c", CAT])).await?;
    let mut att = client.attach(cat.session, Some(0), true).await?;
    wait_output(&mut att, |s| s.contains("ready")).await?;
    let mut ipc = Vec::new();
    for _ in 0..ECHOES {
        let t = Instant::now();
        client.input(cat.session, &b"a"[..]).await?;
        wait_output(&mut att, |s| s.contains('a')).await?;
        ipc.push(t.elapsed());
    }
    let ipc = percentiles(&mut ipc);
    row("1-byte echo p50", ipc.0, direct.0);
    row_beside("  beside one relay process", ipc.0, "relay ", floor.0);
    row("1-byte echo p99", ipc.1, direct.1);
    row_beside("  beside one relay process", ipc.1, "relay ", floor.1);
    client.kill(cat.session, None).await?;

    // The same spawns with many sessions alive: does spawning cost more as the daemon
    // grows, and does the daemon grow threads with its sessions?
    let live: usize = std::env::var("IPC_LIVE").ok().and_then(|n| n.parse().ok()).unwrap_or(500);
    let threads_idle = threads(daemon.pid())?;
    let mut ids = Vec::new();
    let t = Instant::now();
    for _ in 0..live {
        ids.push(client.spawn(SpawnRequest::new("sleep", ["1000"])).await?.session);
    }
    let opened = t.elapsed();
    let threads_live = threads(daemon.pid())?;
    let loaded = percentiles(&mut spawns(&client).await?);
    row_beside(&format!("spawn p50, {live} live"), loaded.0, "none live", unloaded.0);
    row_beside(&format!("spawn p99, {live} live"), loaded.1, "none live", unloaded.1);
    println!(
        "{:<28} {:>10.0} ms       {:.2} ms each",
        format!("open {live} sessions"),
        opened.as_secs_f64() * 1e3,
        opened.as_secs_f64() * 1e3 / live as f64
    );
    println!(
        "{:<28} {:>10}          with none: {}",
        format!("ptyd threads, {live} live"),
        threads_live,
        threads_idle
    );
    // Close them all at once; done when every one has been reaped.
    let t = Instant::now();
    let closes = ids.iter().map(|id| async {
        client.kill(*id, None).await?;
        client.wait(*id, Some(Duration::from_secs(60))).await?;
        anyhow::Ok(())
    });
    for done in futures::future::join_all(closes).await {
        done?;
    }
    println!(
        "{:<28} {:>10.0} ms",
        format!("close {live} sessions"),
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

/// Spawn → first output byte, `SPAWNS` times.
async fn spawns(client: &ipc_proto::Client) -> Result<Vec<Duration>> {
    spawns_n(client, SPAWNS).await
}

async fn spawns_n(client: &ipc_proto::Client, n: usize) -> Result<Vec<Duration>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let (_, mut att) = client
            .spawn_attached(SpawnRequest::new("echo", ["x"]), AttachMode { lossless: true })
            .await?;
        while let Some(ev) = att.next().await {
            if matches!(ev, SessionEvent::Output { .. }) {
                break;
            }
        }
        out.push(t.elapsed());
    }
    Ok(out)
}

/// Spawns one at a time with a pause before each.
async fn spawns_apart(client: &ipc_proto::Client) -> Result<Vec<Duration>> {
    let mut out = Vec::new();
    for _ in 0..SPAWNS_APART {
        tokio::time::sleep(Duration::from_millis(100)).await;
        out.extend(spawns_n(client, 1).await?);
    }
    Ok(out)
}

/// The `Threads:` line of `/proc/<pid>/status`.
fn threads(pid: u32) -> Result<usize> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find_map(|l| l.strip_prefix("Threads:")).context("no Threads:")?;
    Ok(line.trim().parse()?)
}

fn bulk_command() -> SpawnRequest {
    SpawnRequest::new(
        "dd",
        ["if=/dev/zero", "bs=65536", &format!("count={}", BULK / 65536), "status=none"],
    )
}

async fn wait_output(att: &mut ipc_proto::Attachment, done: impl Fn(&str) -> bool) -> Result<()> {
    while let Some(ev) = att.next().await {
        if let SessionEvent::Output { data, .. } = ev {
            if done(&String::from_utf8_lossy(&data)) {
                return Ok(());
            }
        }
    }
    anyhow::bail!("session ended early")
}

fn size() -> PtySize {
    PtySize { rows: 24, cols: 80, pixel_width: 0, pixel_height: 0 }
}

fn direct_spawns() -> Result<Vec<Duration>> {
    let mut out = Vec::new();
    for _ in 0..SPAWNS {
        let t = Instant::now();
        let pair = native_pty_system().openpty(size())?;
        let mut cmd = CommandBuilder::new("echo");
        cmd.arg("x");
        let mut child = pair.slave.spawn_command(cmd)?;
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader()?;
        let mut b = [0u8; 64];
        reader.read(&mut b).context("read")?;
        out.push(t.elapsed());
        child.wait()?;
    }
    Ok(out)
}

fn direct_throughput() -> Result<f64> {
    let pair = native_pty_system().openpty(size())?;
    let spec = bulk_command();
    let mut cmd = CommandBuilder::new(&spec.command);
    cmd.args(&spec.args);
    let t = Instant::now();
    let mut child = pair.slave.spawn_command(cmd)?;
    drop(pair.slave);
    let mut reader = pair.master.try_clone_reader()?;
    let mut buf = vec![0u8; 32 * 1024];
    let mut got = 0;
    // EOF or EIO once the child is gone and the slave closed.
    while let Ok(n) = reader.read(&mut buf) {
        if n == 0 {
            break;
        }
        got += n;
    }
    child.wait()?;
    anyhow::ensure!(got == BULK, "direct read {got} of {BULK} bytes");
    Ok(mib_per_s(got, t.elapsed()))
}

fn direct_echoes() -> Result<Vec<Duration>> {
    let pair = native_pty_system().openpty(size())?;
    let mut cmd = CommandBuilder::new("sh");
    cmd.args(["-c", CAT]);
    let mut child = pair.slave.spawn_command(cmd)?;
    drop(pair.slave);
    let mut reader = pair.master.try_clone_reader()?;
    let mut writer = pair.master.take_writer()?;
    let mut b = [0u8; 256];
    let mut seen = String::new();
    while !seen.contains("ready") {
        let n = reader.read(&mut b)?;
        seen.push_str(&String::from_utf8_lossy(&b[..n]));
    }
    let mut out = Vec::new();
    for _ in 0..ECHOES {
        let t = Instant::now();
        writer.write_all(b"a")?;
        loop {
            let n = reader.read(&mut b)?;
            if b[..n].contains(&b'a') {
                break;
            }
        }
        out.push(t.elapsed());
    }
    child.kill()?;
    child.wait()?;
    Ok(out)
}

/// The same echoes through one process that only copies bytes (the floor for any
/// daemon in between).
fn relayed_echoes() -> Result<Vec<Duration>> {
    let mut r = Relayed::start(&[Hop::Unix], "sh", &["-c", CAT], &[])?;
    r.read_until(b"ready")?;
    let mut out = Vec::new();
    for _ in 0..ECHOES {
        let t = Instant::now();
        r.write(b"a")?;
        r.read_until(b"a")?;
        out.push(t.elapsed());
    }
    Ok(out)
}

fn percentiles(v: &mut [Duration]) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[(v.len() * 99 / 100).min(v.len() - 1)])
}

fn mib_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

fn row(name: &str, ipc: Duration, direct: Duration) {
    row_beside(name, ipc, "direct", direct);
}

fn row_beside(name: &str, ipc: Duration, label: &str, direct: Duration) {
    println!(
        "{name:<28} {:>10.1} µs       {label} {:>10.1} µs       ratio {:.2}",
        ipc.as_secs_f64() * 1e6,
        direct.as_secs_f64() * 1e6,
        ipc.as_secs_f64() / direct.as_secs_f64()
    );
}
