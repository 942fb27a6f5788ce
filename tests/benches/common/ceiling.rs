//! The ceiling the benchmarks set ptyd beside: a PTY opened and read in this very process
//! (portable-pty, blocking reads), with no daemon, socket or WebSocket in between.

use std::io::{Read, Write};

use anyhow::{Context, Result};
use portable_pty::{native_pty_system, Child, CommandBuilder, PtySize};
use ptyd_tests::blocking::BlockingTerm;

/// A program on a PTY of this process.
pub struct Direct {
    child: Box<dyn Child + Send + Sync>,
    reader: Box<dyn Read + Send>,
    writer: Option<Box<dyn Write + Send>>,
    seen: Vec<u8>,
}

impl Direct {
    /// Starts `command args` on a new 80×24 PTY with `env` on top of this process's.
    pub fn spawn(command: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Direct> {
        let size = PtySize { rows: 24, cols: 80, pixel_width: 0, pixel_height: 0 };
        let pair = native_pty_system().openpty(size)?;
        let mut cmd = CommandBuilder::new(command);
        cmd.args(args);
        cmd.env("TERM", "xterm-256color");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = pair.slave.spawn_command(cmd)?;
        drop(pair.slave);
        let reader = pair.master.try_clone_reader()?;
        let writer = pair.master.take_writer()?;
        Ok(Direct { child, reader, writer: Some(writer), seen: Vec::new() })
    }

    /// Reads until the program has ended and closed the terminal; the bytes read.
    pub fn read_to_end(&mut self) -> usize {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        // EOF or EIO once the child is gone and the slave closed.
        while let Ok(n) = self.reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            got += n;
        }
        got
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.process_id().unwrap_or(0)
    }

    /// Hangs the terminal up: SIGHUP to the program, and its terminal closed (so a
    /// program that caught the signal at a bad moment still reads end-of-file); then waits
    /// for it.
    pub fn hang_up(mut self) -> Result<()> {
        self.signal_hangup();
        drop(self.writer.take());
        drop(std::mem::replace(&mut self.reader, Box::new(std::io::empty())));
        self.wait()
    }

    /// SIGHUP, as a closing terminal sends.
    pub fn signal_hangup(&self) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP);
    }

    /// Waits for the child.
    pub fn wait(&mut self) -> Result<()> {
        self.child.wait()?;
        Ok(())
    }
}

impl BlockingTerm for Direct {
    fn read_some(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reader.read(buf)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer.as_mut().context("hung up")?.write_all(bytes)?;
        Ok(())
    }

    fn seen(&mut self) -> &mut Vec<u8> {
        &mut self.seen
    }
}
