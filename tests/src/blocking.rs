//! The benchmarks' blocking references (the in-process PTY, the relay floor): terminals
//! read and written with plain blocking calls, and the round trips they time alike.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A terminal driven with blocking reads and writes.
pub trait BlockingTerm {
    /// Reads what is there, waiting until something is; 0 at the end.
    fn read_some(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;

    /// Writes all of `bytes`.
    fn write(&mut self, bytes: &[u8]) -> Result<()>;

    /// Output read and not yet matched by [`BlockingTerm::read_until`].
    fn seen(&mut self) -> &mut Vec<u8>;

    /// Reads until `needle` has appeared since the last match.
    fn read_until(&mut self, needle: &[u8]) -> Result<()> {
        let mut buf = [0u8; 4096];
        loop {
            let seen = self.seen();
            if let Some(at) = seen.windows(needle.len()).position(|w| w == needle) {
                seen.drain(..at + needle.len());
                return Ok(());
            }
            let n = self.read_some(&mut buf).context("blocking terminal read")?;
            anyhow::ensure!(n > 0, "the terminal ended before {needle:?}");
            self.seen().extend_from_slice(&buf[..n]);
        }
    }
}

/// `n` round trips of one character typed into a shell's line editor (erased again after
/// each): from the keystroke until its echo is read.
pub fn typed_echoes(term: &mut impl BlockingTerm, n: usize) -> Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        term.write(b"a")?;
        term.read_until(b"a")?;
        out.push(t.elapsed());
        term.write(b"\x7f")?;
        term.read_until(b"\x08")?;
    }
    Ok(out)
}
