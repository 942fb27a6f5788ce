//! Reading an attachment's output until a pattern shows up or the session exits.
//!
//! Within one call the helpers check that output offsets are contiguous: every output
//! event must start where the previous one (or a `dropped` gap) ended, so duplicated or
//! silently lost bytes fail the test instead of passing unnoticed.

use std::fmt;
use std::time::Duration;

use anyhow::{bail, Result};
use ipc_proto::{Attachment, ExitStatus, SessionEvent};
use regex::Regex;
use tokio::time::Instant;

/// What to wait for in the output: a literal substring or a regular expression,
/// matched against the output decoded as (lossy) UTF-8.
#[derive(Clone, Debug)]
pub enum Pattern {
    /// A literal substring.
    Substring(String),
    /// A regular expression.
    Regex(Regex),
}

impl Pattern {
    /// Whether `text` contains the pattern.
    pub fn is_match(&self, text: &str) -> bool {
        match self {
            Pattern::Substring(s) => text.contains(s.as_str()),
            Pattern::Regex(re) => re.is_match(text),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Substring(s) => write!(f, "{s:?}"),
            Pattern::Regex(re) => write!(f, "/{}/", re.as_str()),
        }
    }
}

impl From<&str> for Pattern {
    fn from(s: &str) -> Self {
        Pattern::Substring(s.to_string())
    }
}

impl From<String> for Pattern {
    fn from(s: String) -> Self {
        Pattern::Substring(s)
    }
}

impl From<&String> for Pattern {
    fn from(s: &String) -> Self {
        Pattern::Substring(s.clone())
    }
}

impl From<Regex> for Pattern {
    fn from(re: Regex) -> Self {
        Pattern::Regex(re)
    }
}

impl From<&Regex> for Pattern {
    fn from(re: &Regex) -> Self {
        Pattern::Regex(re.clone())
    }
}

/// Everything one read call received.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Collected {
    /// The output bytes, in order (gaps reported in `dropped` are simply absent).
    pub data: Vec<u8>,
    /// Offset of the first output byte received, if any.
    pub first_offset: Option<u64>,
    /// Offset just past the last byte received or dropped: where a resuming
    /// `attach(since)` would continue.
    pub next_offset: Option<u64>,
    /// `dropped` events as `(offset, bytes)`.
    pub dropped: Vec<(u64, u64)>,
    /// The exit status, when the `exit` event arrived.
    pub exit: Option<ExitStatus>,
}

impl Collected {
    /// The output as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// Total bytes reported lost.
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped.iter().map(|(_, n)| n).sum()
    }

    fn check_contiguous(&self, offset: u64, what: &str) -> Result<()> {
        if let Some(expected) = self.next_offset {
            if offset != expected {
                bail!(
                    "{what} at offset {offset}, but the previous event ended at {expected} \
                     ({} bytes {})",
                    offset.abs_diff(expected),
                    if offset > expected { "missing without a dropped event" } else { "repeated" }
                );
            }
        }
        Ok(())
    }

    /// Applies one event. Returns an error on an offset discontinuity.
    fn push(&mut self, event: SessionEvent) -> Result<()> {
        match event {
            SessionEvent::Output { offset, data } => {
                self.check_contiguous(offset, "output")?;
                self.first_offset.get_or_insert(offset);
                self.next_offset = Some(offset + data.len() as u64);
                self.data.extend_from_slice(&data);
            }
            SessionEvent::Dropped { offset, bytes } => {
                self.check_contiguous(offset, "dropped")?;
                self.next_offset = Some(offset + bytes);
                self.dropped.push((offset, bytes));
            }
            SessionEvent::Exit(status) => self.exit = Some(status),
        }
        Ok(())
    }
}

/// Reads events until the output received in this call matches `pattern`, and returns
/// everything received. Fails if the session exits, the attachment ends or `timeout`
/// passes first; the error shows the output seen so far.
pub async fn collect_until(
    att: &mut Attachment,
    pattern: impl Into<Pattern>,
    timeout: Duration,
) -> Result<Collected> {
    let pattern = pattern.into();
    let deadline = Instant::now() + timeout;
    let mut got = Collected::default();
    // A literal only needs the new bytes plus its own length of context.
    let mut searched = 0usize;
    loop {
        let text_matches = match &pattern {
            Pattern::Substring(s) => {
                let from = searched.saturating_sub(s.len());
                let hit = String::from_utf8_lossy(&got.data[from..]).contains(s.as_str());
                searched = got.data.len();
                hit
            }
            Pattern::Regex(re) => re.is_match(&got.text()),
        };
        if text_matches {
            return Ok(got);
        }
        if let Some(status) = got.exit {
            bail!(
                "session {} {status} before its output matched {pattern}; output was:\n{}",
                att.session(),
                got.text()
            );
        }
        let event = match tokio::time::timeout_at(deadline, att.next()).await {
            Ok(Some(event)) => event,
            Ok(None) => bail!(
                "attachment to {} ended (connection closed?) before its output matched \
                 {pattern}; output was:\n{}",
                att.session(),
                got.text()
            ),
            Err(_) => bail!(
                "timed out after {timeout:?} waiting for {pattern} from session {}; output \
                 was:\n{}",
                att.session(),
                got.text()
            ),
        };
        got.push(event)?;
    }
}

/// Reads events until the output received in this call matches `pattern` (a `&str`
/// substring or a [`Regex`]) and returns that output as text. See [`collect_until`].
pub async fn read_until(
    att: &mut Attachment,
    pattern: impl Into<Pattern>,
    timeout: Duration,
) -> Result<String> {
    Ok(collect_until(att, pattern, timeout).await?.text())
}

/// Reads every event until the session's `exit` event and returns all of it (the exit
/// status in [`Collected::exit`]). Fails if the attachment ends without an exit or
/// `timeout` passes first.
pub async fn read_to_exit(att: &mut Attachment, timeout: Duration) -> Result<Collected> {
    let deadline = Instant::now() + timeout;
    let mut got = Collected::default();
    while got.exit.is_none() {
        match tokio::time::timeout_at(deadline, att.next()).await {
            Ok(Some(event)) => got.push(event)?,
            Ok(None) => bail!(
                "attachment to {} ended without an exit event; output was:\n{}",
                att.session(),
                got.text()
            ),
            Err(_) => bail!(
                "timed out after {timeout:?} waiting for session {} to exit; output was:\n{}",
                att.session(),
                got.text()
            ),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn patterns_match() {
        assert!(Pattern::from("hi").is_match("say hi\r\n"));
        assert!(!Pattern::from("hi").is_match("h i"));
        assert!(Pattern::from(Regex::new(r"\d+ bytes").unwrap()).is_match("got 42 bytes"));
    }

    #[test]
    fn offsets_must_be_contiguous() {
        let mut got = Collected::default();
        got.push(SessionEvent::Output { offset: 10, data: Bytes::from_static(b"abc") }).unwrap();
        got.push(SessionEvent::Dropped { offset: 13, bytes: 7 }).unwrap();
        got.push(SessionEvent::Output { offset: 20, data: Bytes::from_static(b"d") }).unwrap();
        assert_eq!(got.data, b"abcd");
        assert_eq!((got.first_offset, got.next_offset), (Some(10), Some(21)));
        assert_eq!(got.dropped_bytes(), 7);
        let gap = got.push(SessionEvent::Output { offset: 25, data: Bytes::from_static(b"x") });
        assert!(gap.unwrap_err().to_string().contains("missing"));
        let dup = got.push(SessionEvent::Output { offset: 20, data: Bytes::from_static(b"d") });
        assert!(dup.unwrap_err().to_string().contains("repeated"));
    }
}
