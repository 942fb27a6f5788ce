//! The browser path (ptyd + ptyd-bridge, a WebSocket client that acts like client-js)
//! beside the in-process PTY ceiling, every figure of the performance issue in one run.
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p ptyd-tests --bench bridge`
//! (`BRIDGE_SESSIONS` changes the 500 sessions opened and closed; `BRIDGE_ONLY=echo,many`
//! runs some of throughput, echo, spawn, churn, many, memory). Workloads are those of
//! the issue's table: `bash --norc --noprofile` at 80×24, 64 MiB of text lines through
//! `cat`. The client acknowledges output as client-js does (every `ackEvery` bytes, here as
//! soon as they arrive: a renderer that keeps up); throughput is shown without acks and
//! with acks every 16 and 64 KiB. ttyd is measured only where it is installed.

#[path = "common/ceiling.rs"]
mod ceiling;
#[path = "common/relay.rs"]
mod relay;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ceiling::Direct;
use futures::{FutureExt, SinkExt, StreamExt};
use ptyd_tests::blocking::{typed_echoes, BlockingTerm};
use ptyd_tests::bridge::Bridge;
use ptyd_tests::{children_of, Daemon, DaemonOptions};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const BULK: usize = 64 * 1024 * 1024;
const ECHOES: usize = 1000;
const PROMPT: &str = "ready$ ";
const SHELL_ARGS: [&str; 2] = ["--norc", "--noprofile"];

#[tokio::main]
async fn main() -> Result<()> {
    relay::serve_if_asked();
    let dir = tempfile::tempdir()?;
    let bulk = dir.path().join("bulk.txt");
    write_bulk(&bulk)?;
    let config = dir.path().join("bridge.toml");
    std::fs::write(&config, profiles(&bulk))?;
    let sessions: usize =
        std::env::var("BRIDGE_SESSIONS").ok().and_then(|n| n.parse().ok()).unwrap_or(500);

    let (daemon, bridge) = start(&config, &[]).await?;
    let pids = [("ptyd", daemon.pid()), ("bridge", bridge.pid())];
    println!("ptyd {} + ptyd-bridge {}, {} cores", daemon.pid(), bridge.pid(), cores());
    match which("ttyd") {
        Some(path) => println!("ttyd at {}: not driven by this benchmark yet", path.display()),
        None => println!(
            "ttyd: not installed, its column is skipped (not packaged in Debian; build it from \
             https://github.com/tsl0922/ttyd with cmake and libwebsockets, libjson-c, libuv dev packages)"
        ),
    }
    println!();

    let only = std::env::var("BRIDGE_ONLY").ok();
    let run = |part: &str| only.as_ref().is_none_or(|o| o.split(',').any(|p| p == part));
    if run("throughput") {
        throughput(&bridge, &bulk, &pids).await?;
    }
    if run("echo") {
        echo(&bridge).await?;
    }
    if run("spawn") {
        spawn_rates(&bridge).await?;
    }
    if run("churn") {
        churn(&bridge).await?;
    }
    if run("many") {
        many(&daemon, &bridge, &pids, sessions).await?;
    }
    if run("memory") {
        transport_memory(&config).await?;
    }
    Ok(())
}

/// A ptyd (with `daemon_args`) and a bridge with the benchmark's profiles.
async fn start(config: &Path, daemon_args: &[&str]) -> Result<(Daemon, Bridge)> {
    let mut args = vec!["--capacity", "2000", "--idle-timeout", "0"];
    args.extend_from_slice(daemon_args);
    let daemon = Daemon::start(DaemonOptions::new().env("RUST_LOG", "warn").args(args)).await?;
    // One client making 500 requests at once: the default cap on connections that have not
    // yet authenticated (256) would take that for a flood and close the oldest.
    let bridge = Bridge::start_with_env(
        daemon.socket(),
        &[
            "--no-spawn-daemon",
            "--max-anonymous-connections",
            "1000",
            "--config",
            config.to_str().context("path")?,
        ],
        &[("RUST_LOG", &std::env::var("BRIDGE_LOG").unwrap_or_else(|_| "warn".into()))],
    )
    .await?;
    Ok((daemon, bridge))
}

/// RSS per idle session with the screen model off: what the transport itself costs.
async fn transport_memory(config: &Path) -> Result<()> {
    const IDLE: usize = 200;
    let (daemon, bridge) = start(config, &["--screen", "off"]).await?;
    let pids = [daemon.pid(), bridge.pid()];
    let mut terms = vec![Term::open(&bridge, "shell", None).await?];
    terms[0].read_until(PROMPT).await?;
    let before: Vec<u64> = pids.iter().map(|pid| rss(*pid)).collect();
    for _ in 0..IDLE {
        let mut term = Term::open(&bridge, "shell", None).await?;
        term.read_until(PROMPT).await?;
        terms.push(term);
    }
    let per: Vec<f64> = pids
        .iter()
        .zip(&before)
        .map(|(pid, b)| rss(*pid).saturating_sub(*b) as f64 / 1024.0 / IDLE as f64)
        .collect();
    println!(
        "{:<34} {:>8.1} KiB    (ptyd {:.1} + bridge {:.1}; {IDLE} sessions, --screen off)",
        "transport RSS per idle session",
        per.iter().sum::<f64>(),
        per[0],
        per[1]
    );
    Ok(())
}

/// Echo through bash's line editor.
async fn echo(bridge: &Bridge) -> Result<()> {
    let direct = percentiles(&mut direct_echoes()?);
    let floor = percentiles(&mut relayed_echoes()?);
    let mut term = Term::open(bridge, "shell", None).await?;
    term.read_until(PROMPT).await?;
    let ws = percentiles(&mut term.echoes(ECHOES).await?);
    row("1-byte echo p50", ws.0, direct.0);
    row_floor(ws.0, floor.0);
    row("1-byte echo p99", ws.1, direct.1);
    row_floor(ws.1, floor.1);
    term.finish(bridge).await
}

/// Spawn → ready → close, one at a time and four at once.
async fn spawn_rates(bridge: &Bridge) -> Result<()> {
    for parallel in [1usize, 4] {
        let rounds = 100 / parallel;
        eprintln!("… spawn rates, {parallel} at once");
        let direct = direct_spawn_rate(parallel, rounds)?;
        let t = Instant::now();
        let runs = (0..parallel).map(|_| async {
            for _ in 0..rounds {
                let mut term = Term::open(bridge, "shell", None).await?;
                term.read_until(PROMPT).await?;
                term.finish(bridge).await?;
            }
            anyhow::Ok(())
        });
        for r in futures::future::join_all(runs).await {
            r?;
        }
        let rate = (parallel * rounds) as f64 / t.elapsed().as_secs_f64();
        println!(
            "{:<34} {rate:>8.0} /s     ceiling {direct:>6.0}  ratio {:.2}",
            format!("spawn → ready → close, {parallel} at once"),
            rate / direct
        );
    }
    Ok(())
}

/// One session's echo while three clients open and close sessions.
async fn churn(bridge: &Bridge) -> Result<()> {
    let mut term = Term::open(bridge, "shell", None).await?;
    term.read_until(PROMPT).await?;
    let stop = flag::Flag::default();
    let churners = (0..3).map(|_| {
        let stop = stop.clone();
        async move {
            let mut n = 0;
            while !stop.is_set() {
                let mut opened = Vec::new();
                for _ in 0..50 {
                    opened.push(Term::open(bridge, "shell", None).await?);
                }
                for term in opened {
                    term.finish(bridge).await?;
                }
                n += 50;
            }
            anyhow::Ok(n)
        }
    });
    let measure = async {
        let t = term.echoes(ECHOES).await;
        stop.set();
        t
    };
    let (echoes, churned) = tokio::join!(measure, futures::future::join_all(churners));
    let mut echoes = echoes?;
    let churned: usize = churned.into_iter().collect::<Result<Vec<_>>>()?.iter().sum();
    let (p50, p99) = percentiles(&mut echoes);
    println!(
        "{:<34} p50 {:>7.1} µs  p99 {:>7.1} µs  worst {:>7.1} ms   ({churned} sessions opened and closed meanwhile)",
        "echo while 3 × 50 open and close",
        micros(p50),
        micros(p99),
        echoes.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );
    term.finish(bridge).await
}

/// Many sessions: open, hold idle, close.
async fn many(
    daemon: &Daemon,
    bridge: &Bridge,
    pids: &[(&str, u32); 2],
    sessions: usize,
) -> Result<()> {
    eprintln!("… {sessions} sessions");
    let direct_open = Instant::now();
    let mut directs = Vec::new();
    for _ in 0..sessions {
        let mut d = Direct::spawn("bash", &SHELL_ARGS, &[("PS1", PROMPT)])?;
        d.read_until(PROMPT.as_bytes())?;
        directs.push(d);
    }
    let direct_open = direct_open.elapsed();
    let direct_close = Instant::now();
    for d in &directs {
        d.signal_hangup();
    }
    for d in directs {
        d.hang_up()?;
    }
    let direct_close = direct_close.elapsed();

    let before: Vec<u64> = pids.iter().map(|(_, pid)| rss(*pid)).collect();
    let t = Instant::now();
    let mut terms = Vec::new();
    for _ in 0..sessions {
        let mut term = Term::open(bridge, "shell", None).await?;
        term.read_until(PROMPT).await?;
        terms.push(term);
    }
    let opened = t.elapsed();
    let after: Vec<u64> = pids.iter().map(|(_, pid)| rss(*pid)).collect();
    println!(
        "{:<34} {:>8.0} ms     ceiling {:>6.0}  ratio {:.2}",
        format!("open {sessions} sessions until each answers"),
        millis(opened),
        millis(direct_open),
        opened.as_secs_f64() / direct_open.as_secs_f64()
    );
    let per: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.saturating_sub(*b) as f64 / 1024.0 / sessions as f64)
        .collect();
    println!(
        "{:<34} {:>8.1} KiB    (ptyd {:.1} with its screen model + bridge {:.1}); shells excluded",
        "server RSS per idle session",
        per.iter().sum::<f64>(),
        per[0],
        per[1]
    );
    println!(
        "{:<34} ptyd {}, bridge {}",
        format!("threads at {sessions} sessions"),
        threads(daemon.pid())?,
        threads(bridge.pid())?
    );
    let t = Instant::now();
    let paths: Vec<String> = terms.iter().map(|t| format!("/api/terminals/{}", t.id)).collect();
    let deletes = paths.iter().map(|path| bridge.delete(path));
    for r in futures::future::join_all(deletes).await {
        let r = r?;
        if r.status != 204 && r.status != 200 {
            bail!("DELETE answered {} {}", r.status, r.body);
        }
    }
    eprintln!("… every DELETE answered after {:?}", t.elapsed());
    let shells = || children_of(daemon.pid()).iter().filter(|(_, _, c)| c == "bash").count();
    while shells() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let closed = t.elapsed();
    println!(
        "{:<34} {:>8.0} ms     ceiling {:>6.0}  ratio {:.2}   (every shell reaped)",
        format!("close {sessions} sessions"),
        millis(closed),
        millis(direct_close),
        closed.as_secs_f64() / direct_close.as_secs_f64()
    );
    drop(terms);
    Ok(())
}

/// A stand-in for a cancellation token: set once, read by the churners.
mod flag {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[derive(Clone, Default)]
    pub struct Flag(Arc<AtomicBool>);

    impl Flag {
        pub fn set(&self) {
            self.0.store(true, Ordering::Relaxed)
        }
        pub fn is_set(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }
    }
}

fn profiles(bulk: &Path) -> String {
    let bulk = bulk.display();
    format!(
        "[bridge.profiles.shell]\ncommand = \"bash\"\nargs = [\"--norc\", \"--noprofile\"]\nenv = {{ PS1 = \"{PROMPT}\" }}\n\n\
         [bridge.profiles.bulk]\ncommand = \"sh\"\nargs = [\"-c\", \"stty -echo; echo go; read x; exec cat {bulk}\"]\n"
    )
}

/// 64 MiB of numbered text lines, like a log being printed.
fn write_bulk(path: &Path) -> Result<()> {
    let mut text = String::with_capacity(BULK);
    let mut n = 0u64;
    while text.len() < BULK {
        text.push_str(&format!("{n:>10} the quick brown fox jumps over the lazy dog 0123456789\n"));
        n += 1;
    }
    text.truncate(BULK);
    std::fs::write(path, text)?;
    Ok(())
}

/// A browser terminal as client-js drives it.
struct Term {
    id: String,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    offset: u64,
    acked: u64,
    ack_every: Option<u64>,
    seen: Vec<u8>,
    /// A frame read ahead (to see whether one was waiting).
    pending: Option<Message>,
    /// Binary frames received.
    frames: u64,
}

impl Term {
    async fn open(bridge: &Bridge, profile: &str, ack_every: Option<u64>) -> Result<Term> {
        let id = bridge.create(&format!(r#"{{"profile":"{profile}"}}"#)).await?;
        let ws = bridge.upgrade(&format!("/ws/terminal/{id}"), &[]).await?;
        let mut term = Term {
            id,
            ws,
            offset: 0,
            acked: 0,
            ack_every,
            seen: Vec::new(),
            pending: None,
            frames: 0,
        };
        let hello = term.control().await?;
        anyhow::ensure!(hello["type"] == "hello", "expected hello, got {hello}");
        term.offset = hello["offset"].as_u64().context("hello without offset")?;
        term.acked = term.offset;
        if ack_every.is_some() {
            term.ack(term.offset).await?;
        }
        Ok(term)
    }

    async fn ack(&mut self, offset: u64) -> Result<()> {
        self.ws
            .send(Message::Text(format!(r#"{{"type":"ack","offset":{offset}}}"#).into()))
            .await?;
        self.acked = offset;
        Ok(())
    }

    /// The next control message, keeping output in `seen`.
    async fn control(&mut self) -> Result<Value> {
        loop {
            if let Some(v) = self.frame().await? {
                return Ok(v);
            }
        }
    }

    /// One frame: output is counted (and acknowledged), a control message returned. Acks
    /// go out as client-js sends them with a renderer that keeps up: every `ack_every`
    /// bytes, and whenever everything received so far is rendered (no frame waiting).
    async fn frame(&mut self) -> Result<Option<Value>> {
        let msg = match self.pending.take() {
            Some(msg) => msg,
            None => tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .context("nothing from the bridge for 30 s")?
                .context("the socket ended")??,
        };
        match msg {
            Message::Binary(b) => {
                self.frames += 1;
                self.offset += b.len() as u64;
                self.seen.extend_from_slice(&b);
                if let Some(every) = self.ack_every {
                    if self.offset - self.acked >= every {
                        self.ack(self.offset).await?;
                    } else {
                        match self.ws.next().now_or_never() {
                            Some(Some(next)) => self.pending = Some(next?),
                            Some(None) => bail!("the socket ended"),
                            None if self.offset > self.acked => self.ack(self.offset).await?,
                            None => {}
                        }
                    }
                }
                Ok(None)
            }
            Message::Text(t) => Ok(Some(serde_json::from_str(t.as_str())?)),
            Message::Close(f) => bail!("closed: {f:?}"),
            _ => Ok(None),
        }
    }

    async fn read_until(&mut self, needle: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let needle = needle.as_bytes();
        loop {
            // Pings keep a stuck socket from ever being silent.
            if Instant::now() > deadline {
                bail!(
                    "no {:?} within 30 s on {}; got {:?}",
                    String::from_utf8_lossy(needle),
                    self.id,
                    String::from_utf8_lossy(&self.seen)
                );
            }
            if let Some(at) = self.seen.windows(needle.len()).position(|w| w == needle) {
                self.seen.drain(..at + needle.len());
                return Ok(());
            }
            if let Some(v) = self.frame().await? {
                if v["type"] == "exit" {
                    bail!("the program ended before {needle:?}");
                }
            }
        }
    }

    /// Output until the program's exit; the bytes received.
    async fn drain_to_exit(&mut self) -> Result<u64> {
        let start = self.offset;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            anyhow::ensure!(Instant::now() < deadline, "no exit within 120 s on {}", self.id);
            self.seen.clear();
            if let Some(v) = self.frame().await? {
                if v["type"] == "exit" {
                    return Ok(self.offset - start);
                }
            }
        }
    }

    /// `n` round trips of one typed character (erased again after each).
    async fn echoes(&mut self, n: usize) -> Result<Vec<Duration>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            self.ws.send(Message::Binary(b"a".to_vec().into())).await?;
            self.read_until("a").await?;
            out.push(t.elapsed());
            self.ws.send(Message::Binary(b"\x7f".to_vec().into())).await?;
            self.read_until("\x08").await?;
        }
        Ok(out)
    }

    async fn close(mut self) -> Result<()> {
        let _ = self.ws.close(None).await;
        Ok(())
    }

    /// Closes the terminal for good (as the page's close button does).
    async fn finish(self, bridge: &Bridge) -> Result<()> {
        let id = self.id.clone();
        self.close().await?;
        let r = bridge.delete(&format!("/api/terminals/{id}")).await?;
        // 410: it had ended by itself.
        if ![200, 204, 410].contains(&r.status) {
            bail!("DELETE answered {} {}", r.status, r.body);
        }
        Ok(())
    }
}

/// MiB/s, the time it took, and the mean WebSocket frame in KiB.
async fn ws_throughput(bridge: &Bridge, ack: Option<u64>) -> Result<(f64, Duration, f64)> {
    let mut term = Term::open(bridge, "bulk", ack).await?;
    term.read_until("go").await?;
    let t = Instant::now();
    term.ws.send(Message::Binary(b"\n".to_vec().into())).await?;
    let frames_before = term.frames;
    let got = term.drain_to_exit().await?;
    let mean_frame = got as f64 / 1024.0 / (term.frames - frames_before).max(1) as f64;
    let elapsed = t.elapsed();
    anyhow::ensure!(got as usize >= BULK, "received {got} of {BULK} bytes");
    term.finish(bridge).await?;
    Ok((BULK as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64(), elapsed, mean_frame))
}

fn direct_throughput(bulk: &Path) -> Result<f64> {
    let script = format!("stty -echo; echo go; read x; exec cat {}", bulk.display());
    let mut d = Direct::spawn("sh", &["-c", &script], &[])?;
    d.read_until(b"go")?;
    let t = Instant::now();
    d.write(b"\n")?;
    let got = d.read_to_end();
    let elapsed = t.elapsed();
    d.wait()?;
    anyhow::ensure!(got >= BULK, "direct read {got} of {BULK} bytes");
    Ok(BULK as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64())
}

fn direct_echoes() -> Result<Vec<Duration>> {
    let mut d = Direct::spawn("bash", &SHELL_ARGS, &[("PS1", PROMPT)])?;
    d.read_until(PROMPT.as_bytes())?;
    let out = typed_echoes(&mut d, ECHOES)?;
    d.hang_up()?;
    Ok(out)
}

/// The same echoes through two processes that only copy bytes, as ptyd-bridge and ptyd
/// sit between a browser and the shell (TCP to the first, a Unix socket to the second).
fn relayed_echoes() -> Result<Vec<Duration>> {
    let hops = [relay::Hop::Tcp, relay::Hop::Unix];
    let mut r = relay::Relayed::start(&hops, "bash", &SHELL_ARGS, &[("PS1", PROMPT)])?;
    r.read_until(PROMPT.as_bytes())?;
    typed_echoes(&mut r, ECHOES)
}

/// Spawn → prompt → hang up → reaped, per second, with `parallel` threads.
fn direct_spawn_rate(parallel: usize, rounds: usize) -> Result<f64> {
    let t = Instant::now();
    let threads: Vec<_> = (0..parallel)
        .map(|_| {
            std::thread::spawn(move || -> Result<()> {
                for _ in 0..rounds {
                    let mut d = Direct::spawn("bash", &SHELL_ARGS, &[("PS1", PROMPT)])?;
                    d.read_until(PROMPT.as_bytes())?;
                    d.hang_up()?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("a spawn thread panicked"))??;
    }
    Ok((parallel * rounds) as f64 / t.elapsed().as_secs_f64())
}

/// CPU time of the server processes over a stretch of wall time.
struct Cpu(Vec<(u32, u64)>);

impl Cpu {
    fn start(pids: &[(&str, u32)]) -> Cpu {
        Cpu(pids.iter().map(|(_, pid)| (*pid, cpu_ticks(*pid))).collect())
    }

    /// Per process, % of one core.
    fn percent(&self, wall: Duration) -> Vec<f64> {
        let hz =
            nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100)
                as f64;
        self.0
            .iter()
            .map(|(pid, t0)| (cpu_ticks(*pid) - t0) as f64 / hz / wall.as_secs_f64() * 100.0)
            .collect()
    }
}

/// utime + stime of `/proc/<pid>/stat`.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    field(14) + field(15)
}

fn rss(pid: u32) -> u64 {
    ptyd_tests::rss_bytes(pid).unwrap_or(0)
}

fn threads(pid: u32) -> Result<usize> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find_map(|l| l.strip_prefix("Threads:")).context("no Threads:")?;
    Ok(line.trim().parse()?)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn percentiles(v: &mut [Duration]) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[(v.len() * 99 / 100).min(v.len() - 1)])
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The figure beside the floor of two relay processes.
fn row_floor(ws: Duration, floor: Duration) {
    println!(
        "{:<34} {:>8.1} µs     2 relays {:>5.1}  ratio {:.2}",
        "  beside two relay processes",
        micros(ws),
        micros(floor),
        ws.as_secs_f64() / floor.as_secs_f64()
    );
}

fn row(name: &str, ws: Duration, direct: Duration) {
    println!(
        "{name:<34} {:>8.1} µs     ceiling {:>6.1}  ratio {:.2}",
        micros(ws),
        micros(direct),
        ws.as_secs_f64() / direct.as_secs_f64()
    );
}

/// 64 MiB through the WebSocket without acks and with acks every 16 and 64 KiB, and the
/// server's CPU meanwhile, beside the in-process read.
async fn throughput(bridge: &Bridge, bulk: &Path, pids: &[(&str, u32); 2]) -> Result<()> {
    let direct = direct_throughput(bulk)?;
    for ack in [None, Some(16 * 1024), Some(64 * 1024)] {
        let cpu = Cpu::start(pids);
        let (mib_s, elapsed, frame) = ws_throughput(bridge, ack).await?;
        let used = cpu.percent(elapsed);
        let label = ack.map_or("no acks".to_string(), |a| format!("acks every {} KiB", a / 1024));
        println!(
            "{:<34} {mib_s:>8.1} MiB/s  ceiling {direct:>6.1}  ratio {:.2}   server CPU {:.0} % (ptyd {:.0} + bridge {:.0}), frames of {frame:.1} KiB",
            format!("64 MiB cat, {label}"),
            mib_s / direct,
            used.iter().sum::<f64>(),
            used[0],
            used[1]
        );
    }
    Ok(())
}
