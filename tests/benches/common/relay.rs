//! The floor for a path with processes in between: relays that do nothing but copy bytes
//! as they come (blocking reads, a thread per direction, no framing, no queues), each a
//! process of its own started from this very benchmark binary. Set beside ptyd's figures,
//! they tell what crossing a process costs on this machine from what ptyd adds to that.
//!
//! `Relayed::start(&[Hop::Unix], …)` is the IPC path's floor (client → one process →
//! PTY); `&[Hop::Tcp, Hop::Unix]` the browser path's (client → TCP → one process → Unix
//! socket → another → PTY), as with ptyd-bridge in front of ptyd.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use portable_pty::{native_pty_system, CommandBuilder, PtySize};
use ptyd_tests::blocking::BlockingTerm;

/// Set (to the role) in a relay's environment: the benchmark's `main` then runs the relay.
const ROLE_ENV: &str = "PTYD_BENCH_RELAY";

/// How a relay is reached.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)] // Each benchmark uses the hops of its own path.
pub enum Hop {
    /// TCP on the loopback, Nagle off (as browsers and ptyd-bridge have it).
    Tcp,
    /// A Unix stream socket.
    Unix,
}

/// When this process was started as a relay, runs it and exits; call first in `main`.
pub fn serve_if_asked() {
    let Ok(role) = std::env::var(ROLE_ENV) else { return };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match role.as_str() {
        "pty" => serve_pty(&args),
        "forward" => serve_forward(&args),
        other => Err(anyhow::anyhow!("unknown relay role {other:?}")),
    };
    if let Err(e) = result {
        eprintln!("relay: {e:#}");
        std::process::exit(1);
    }
    std::process::exit(0);
}

/// A stream both ways, whichever socket it is.
trait Duplex: Read + Write + Send {
    fn try_clone_box(&self) -> std::io::Result<Box<dyn Duplex>>;
}

impl Duplex for TcpStream {
    fn try_clone_box(&self) -> std::io::Result<Box<dyn Duplex>> {
        Ok(Box::new(self.try_clone()?))
    }
}

impl Duplex for UnixStream {
    fn try_clone_box(&self) -> std::io::Result<Box<dyn Duplex>> {
        Ok(Box::new(self.try_clone()?))
    }
}

/// Listens as `hop` says (a Unix socket at `path`, or TCP on a free loopback port),
/// says where on stdout, and accepts one connection.
fn listen_and_accept(hop: &str, path: &Path) -> Result<Box<dyn Duplex>> {
    let mut stdout = std::io::stdout();
    match hop {
        "unix" => {
            let listener = UnixListener::bind(path)?;
            writeln!(stdout, "{}", path.display())?;
            stdout.flush()?;
            Ok(Box::new(listener.accept()?.0))
        }
        "tcp" => {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            writeln!(stdout, "{}", listener.local_addr()?)?;
            stdout.flush()?;
            let (stream, _) = listener.accept()?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream))
        }
        other => bail!("unknown hop {other:?}"),
    }
}

/// Copies both ways until either side ends.
fn pump(
    mut a_in: Box<dyn Read + Send>,
    mut a_out: Box<dyn Write + Send>,
    mut b_in: Box<dyn Read + Send>,
    mut b_out: Box<dyn Write + Send>,
) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut b_in, &mut a_out);
        std::process::exit(0);
    });
    let _ = std::io::copy(&mut a_in, &mut b_out);
}

/// `pty HOP PATH COMMAND ARGS…`: the last relay, owning the program's PTY.
fn serve_pty(args: &[String]) -> Result<()> {
    let [hop, path, command, rest @ ..] = args else { bail!("pty HOP PATH COMMAND ARGS…") };
    let size = PtySize { rows: 24, cols: 80, pixel_width: 0, pixel_height: 0 };
    let pair = native_pty_system().openpty(size)?;
    let mut cmd = CommandBuilder::new(command);
    cmd.args(rest);
    cmd.env("TERM", "xterm-256color");
    let _child = pair.slave.spawn_command(cmd)?;
    drop(pair.slave);
    let client = listen_and_accept(hop, Path::new(path))?;
    let client_out = client.try_clone_box()?;
    pump(Box::new(client), client_out, pair.master.try_clone_reader()?, pair.master.take_writer()?);
    Ok(())
}

/// `forward HOP PATH UPSTREAM`: a relay in front of another, reached over a Unix socket.
fn serve_forward(args: &[String]) -> Result<()> {
    let [hop, path, upstream] = args else { bail!("forward HOP PATH UPSTREAM") };
    let client = listen_and_accept(hop, Path::new(path))?;
    let up = UnixStream::connect(upstream).with_context(|| format!("connecting {upstream}"))?;
    let (client_out, up_out) = (client.try_clone_box()?, up.try_clone()?);
    pump(Box::new(client), client_out, Box::new(up), Box::new(up_out));
    Ok(())
}

/// A program reached through relay processes, read and written like [`super::ceiling`]'s
/// direct PTY.
pub struct Relayed {
    stream: Box<dyn Duplex>,
    relays: Vec<Child>,
    seen: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Relayed {
    /// Starts `command args` with `env` behind one relay per hop (the first hop is the
    /// client's).
    pub fn start(
        hops: &[Hop],
        command: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Relayed> {
        let dir = tempfile::tempdir()?;
        let exe = std::env::current_exe()?;
        let mut relays = Vec::new();
        let mut upstream: Option<String> = None;
        // From the PTY outwards: each relay listens where the one before it connects.
        for (i, hop) in hops.iter().rev().enumerate() {
            let hop_name = match hop {
                Hop::Tcp => "tcp",
                Hop::Unix => "unix",
            };
            let path = dir.path().join(format!("relay-{i}.sock"));
            let mut cmd = Command::new(&exe);
            cmd.stdin(Stdio::null()).stdout(Stdio::piped()).envs(env.iter().copied());
            match &upstream {
                None => cmd.env(ROLE_ENV, "pty").arg(hop_name).arg(&path).arg(command).args(args),
                Some(up) => cmd.env(ROLE_ENV, "forward").arg(hop_name).arg(&path).arg(up),
            };
            let mut child = cmd.spawn()?;
            // The relay says where it listens once it does.
            let mut line = String::new();
            BufReader::new(child.stdout.take().context("relay stdout")?).read_line(&mut line)?;
            relays.push(child);
            let at = line.trim().to_string();
            anyhow::ensure!(!at.is_empty(), "a relay did not start");
            upstream = Some(at);
        }
        let at = upstream.context("no hops")?;
        let stream: Box<dyn Duplex> = match hops.first() {
            Some(Hop::Tcp) => {
                let s = TcpStream::connect(&at)?;
                s.set_nodelay(true)?;
                Box::new(s)
            }
            _ => Box::new(UnixStream::connect(&at)?),
        };
        Ok(Relayed { stream, relays, seen: Vec::new(), _dir: dir })
    }
}

impl BlockingTerm for Relayed {
    fn read_some(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stream.read(buf)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    fn seen(&mut self) -> &mut Vec<u8> {
        &mut self.seen
    }
}

impl Drop for Relayed {
    fn drop(&mut self) {
        // The last relay's exit closes the PTY, which hangs its program up.
        for relay in &mut self.relays {
            let _ = relay.kill();
            let _ = relay.wait();
        }
    }
}
