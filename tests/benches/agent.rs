//! The agent API's latencies, each beside a reference measured in the same run.
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p ptyd-tests --bench agent`
//!
//! 1. `exec -- true` round trip: the Rust client's `exec` over IPC, `ptyctl exec -- true`
//!    as a new process, and tmux doing the same (`new-session -d 'true; tmux wait-for -S
//!    done-N'` then `wait-for done-N`, against a tmux server started beforehand, whose
//!    startup is reported once on its own), plus a plain fork+exec of `true` as the floor.
//! 2. `run -- true` in a live bash (the Rust client, and `ptyctl run` as a new process),
//!    beside tmux typing the same into a bash it runs (`send-keys 'true; tmux wait-for -S
//!    done-N' Enter`, then `wait-for done-N`).
//! 3. Output → `wait_for`: a `cat` on a raw, non-echoing terminal is sent `ping-N\n`;
//!    measured from sending it until `wait_for` (since the previous match's end) resolves,
//!    beside a lossless attachment reading the same echo.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ipc_proto::{
    Attachment, Client, ExecRequest, RunRequest, SessionEvent, SessionId, SpawnRequest,
};
use ptyd_tests::{Daemon, DaemonOptions};
use tokio::process::Command;

/// Round trips per `exec -- true` variant.
const EXECS: usize = 200;
/// Echoes per output → notification variant.
const PINGS: usize = 1000;
/// Untimed runs before each measurement.
const WARMUP: usize = 10;
/// Nothing measured here should come close to this.
const LIMIT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().env("RUST_LOG", "warn")).await?;
    let client = daemon.try_client().await?;
    println!("ptyd {:?} (pid {})", ptyd_tests::ptyd_bin()?, daemon.pid());

    println!("\nexec -- true, round trip ({EXECS} runs each)");
    header();
    let ipc = measure(EXECS, || exec_true(&client)).await?;
    row("ptyd exec over IPC (Rust client)", &ipc, None);
    let (ptyctl, daemon) = (&ptyd_tests::ptyctl_bin()?, &daemon);
    let cli = measure(EXECS, || async move {
        let mut cmd = Command::new(ptyctl);
        cmd.arg("--socket").arg(daemon.socket()).args(["exec", "--", "true"]);
        run(&mut cmd).await
    })
    .await?;
    row("ptyctl exec -- true (new process)", &cli, Some(&ipc));
    match tmux_round_trips(daemon.dir()).await? {
        Some((startup, tmux)) => {
            row("tmux new-session -d + wait-for", &tmux, Some(&ipc));
            println!(
                "  {:<40} {:>10.1} µs (once, not in the row above)",
                "tmux server startup (first new-session)",
                micros(startup)
            );
        }
        None => println!("  tmux not installed: apt-get install -y tmux"),
    }
    let floor = measure(EXECS, || async { run(&mut Command::new("true")).await }).await?;
    row("fork+exec of true, no pty, no IPC", &floor, Some(&ipc));
    println!("  (ratio: this row's p50 / ptyd exec's p50)");

    println!("\nrun -- true in a live bash, round trip ({EXECS} runs each)");
    header();
    let mut shell = SpawnRequest::new("bash", Vec::<String>::new());
    shell.env.insert("HOME".into(), daemon.dir().display().to_string());
    let bash = client.spawn(shell).await?.session;
    let runs = measure(EXECS, || run_true(&client, bash)).await?;
    row("ptyd run over IPC (Rust client)", &runs, Some(&ipc));
    let cli = measure(EXECS, || async move {
        let mut cmd = Command::new(ptyctl);
        let id = bash.to_string();
        cmd.arg("--socket").arg(daemon.socket()).args(["run", &id, "--", "true"]);
        run(&mut cmd).await
    })
    .await?;
    row("ptyctl run -- true (new process)", &cli, Some(&ipc));
    match tmux_live_round_trips(daemon.dir()).await? {
        Some(tmux) => row("tmux send-keys + wait-for, live bash", &tmux, Some(&ipc)),
        None => println!("  tmux not installed: apt-get install -y tmux"),
    }
    println!("  (ratio: this row's p50 / ptyd exec's p50 above)");
    client.kill(bash, None).await?;

    println!("\noutput → notification: `cat` echoes ping-N on a raw terminal ({PINGS} each)");
    header();
    let cat = client
        .spawn(SpawnRequest::new("sh", ["-c", "stty raw -echo; echo ready; exec cat"]))
        .await?;
    let ready = client.wait_for(cat.session, "ready\r?\n", Some(0), Some(LIMIT)).await?;
    let (waits, end) = wait_for_pings(&client, cat.session, ready.end).await?;
    row("wait_for since the previous end", &waits, None);
    let reads = attach_pings(&client, cat.session, end).await?;
    row("attach (lossless), reading events", &reads, Some(&waits));
    println!("  (ratio: attach p50 / wait_for p50)");
    client.kill(cat.session, None).await?;
    Ok(())
}

fn exec_request(command: &str) -> ExecRequest {
    ExecRequest {
        command: command.to_string(),
        args: Vec::new(),
        env: Default::default(),
        cwd: None,
        cols: 80,
        rows: 24,
        timeout_ms: Some(LIMIT.as_millis() as u64),
        max_output: None,
    }
}

async fn exec_true(client: &Client) -> Result<()> {
    let (result, _) = client.exec(exec_request("true")).await?;
    ensure!(result.code == Some(0) && !result.timed_out, "exec -- true: {result:?}");
    Ok(())
}

async fn run_true(client: &Client, session: SessionId) -> Result<()> {
    let req = RunRequest { session, command: "true".into(), timeout_ms: None, max_output: None };
    let (result, _) = client.run(req).await?;
    ensure!(result.code == Some(0) && !result.timed_out, "run -- true: {result:?}");
    Ok(())
}

/// The tmux equivalent of `run -- true`: typed into a bash that a tmux session runs
/// (`send-keys 'true; tmux wait-for -S done-N' Enter`), then `wait-for done-N`.
async fn tmux_live_round_trips(dir: &Path) -> Result<Option<Vec<Duration>>> {
    let socket = dir.join("tmux-live.sock");
    let tmux = |args: &[&str]| {
        let mut cmd = Command::new("tmux");
        cmd.arg("-f").arg("/dev/null").arg("-S").arg(&socket).args(args);
        cmd
    };
    match tmux(&["new-session", "-d", "-s", "live", "bash --norc --noprofile"]).status().await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => bail!("cannot run tmux: {e}"),
        Ok(s) if !s.success() => bail!("tmux could not start a server: {s}"),
        Ok(_) => {}
    }
    let mut n = 0;
    let result = measure(EXECS, || {
        n += 1;
        let line = format!("true; tmux -S '{}' wait-for -S done-{n}", socket.display());
        let mut send = tmux(&["send-keys", "-t", "live", &line, "Enter"]);
        let mut wait = tmux(&["wait-for", &format!("done-{n}")]);
        async move {
            run(&mut send).await?;
            run(&mut wait).await
        }
    })
    .await;
    let _ = run(&mut tmux(&["kill-server"])).await;
    result.map(Some)
}

/// Runs `cmd` to completion with no I/O; fails unless it exits 0.
async fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .env_remove("TMUX")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .with_context(|| format!("cannot run {cmd:?}"))?;
    ensure!(status.success(), "{cmd:?}: {status}");
    Ok(())
}

/// Times `n` runs of `f` after a short warm-up.
async fn measure<F, Fut>(n: usize, mut f: F) -> Result<Vec<Duration>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    for _ in 0..WARMUP {
        f().await?;
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        tokio::time::timeout(LIMIT, f()).await.context("a run took too long")??;
        times.push(t.elapsed());
    }
    Ok(times)
}

/// The tmux equivalent of `exec -- true`, against a server that is already running.
/// Returns the server's startup time and the round trips; `None` without tmux.
async fn tmux_round_trips(dir: &Path) -> Result<Option<(Duration, Vec<Duration>)>> {
    let socket = dir.join("tmux.sock");
    let tmux = |args: &[&str]| {
        let mut cmd = Command::new("tmux");
        cmd.arg("-f").arg("/dev/null").arg("-S").arg(&socket).args(args);
        cmd
    };
    let t = Instant::now();
    match tmux(&["new-session", "-d", "-s", "keep", "sleep 3600"]).status().await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => bail!("cannot run tmux: {e}"),
        Ok(s) if !s.success() => bail!("tmux could not start a server: {s}"),
        Ok(_) => {}
    }
    let startup = t.elapsed();
    let mut n = 0;
    let result = measure(EXECS, || {
        n += 1;
        let signal = format!("true; tmux -S '{}' wait-for -S done-{n}", socket.display());
        let mut start = tmux(&["new-session", "-d", &signal]);
        let mut wait = tmux(&["wait-for", &format!("done-{n}")]);
        async move {
            run(&mut start).await?;
            run(&mut wait).await
        }
    })
    .await;
    let _ = run(&mut tmux(&["kill-server"])).await;
    Ok(Some((startup, result?)))
}

/// `ping-N\n` into the session, timed until `wait_for` reports it. Returns the times and
/// the output offset after the last echo.
async fn wait_for_pings(
    client: &Client,
    session: SessionId,
    mut since: u64,
) -> Result<(Vec<Duration>, u64)> {
    let mut times = Vec::with_capacity(PINGS);
    for n in 0..PINGS + WARMUP {
        let line = format!("ping-{n}\n");
        let pattern = line.clone();
        let t = Instant::now();
        // The wait_for is read (and subscribed) before the input on this connection; its
        // `since` makes the order irrelevant anyway.
        let (found, sent) = tokio::join!(
            client.wait_for(session, &pattern, Some(since), Some(LIMIT)),
            client.input(session, line.into_bytes())
        );
        sent?;
        let found = found?;
        if n >= WARMUP {
            times.push(t.elapsed());
        }
        since = found.end;
    }
    Ok((times, since))
}

/// `ping-N\n` into the session, timed until a lossless attachment has received it.
async fn attach_pings(client: &Client, session: SessionId, since: u64) -> Result<Vec<Duration>> {
    let mut att = client.attach(session, Some(since), true).await?;
    let mut times = Vec::with_capacity(PINGS);
    for n in 0..PINGS + WARMUP {
        let line = format!("ping-{n}\n");
        let t = Instant::now();
        let (sent, got) =
            tokio::join!(client.input(session, line.clone().into_bytes()), read_line(&mut att));
        sent?;
        let got = got?;
        ensure!(got == line, "expected {line:?}, read {got:?}");
        if n >= WARMUP {
            times.push(t.elapsed());
        }
    }
    Ok(times)
}

/// Output events up to and including the next `\n`.
async fn read_line(att: &mut Attachment) -> Result<String> {
    let mut text = String::new();
    while !text.ends_with('\n') {
        match tokio::time::timeout(LIMIT, att.next()).await.context("no echo")? {
            Some(SessionEvent::Output { data, .. }) => {
                text.push_str(&String::from_utf8_lossy(&data))
            }
            Some(other) => bail!("unexpected {other:?}"),
            None => bail!("the session ended"),
        }
    }
    Ok(text)
}

fn percentiles(times: &[Duration]) -> (Duration, Duration) {
    let mut v = times.to_vec();
    v.sort();
    (v[v.len() / 2], v[(v.len() * 99 / 100).min(v.len() - 1)])
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn header() {
    println!("  {:<40} {:>13} {:>13} {:>6}", "", "p50", "p99", "ratio");
}

/// One line: p50 and p99, and the p50 ratio to `reference` when given.
fn row(name: &str, times: &[Duration], reference: Option<&[Duration]>) {
    let (p50, p99) = percentiles(times);
    let ratio = reference
        .map(|r| format!("{:>6.2}", p50.as_secs_f64() / percentiles(r).0.as_secs_f64()))
        .unwrap_or_default();
    println!("  {name:<40} {:>10.1} µs {:>10.1} µs {ratio}", micros(p50), micros(p99));
}
