//! One PTY session's shared state: its output ring and subscribers, its terminal I/O,
//! its activity clock and its exit status. The lifecycle task in `lifecycle.rs` drives it.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ipc_proto::{ExitStatus, SessionId, SessionInfo, SessionState};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::ring::{OutputRing, Replay};

/// Chunks a subscriber may have queued before it counts as slow. With 32 KiB reads this
/// bounds a subscriber's queue to 1 MiB.
const SUBSCRIBER_DEPTH: usize = 32;

/// A piece of output at an absolute offset.
#[derive(Clone, Debug)]
pub struct Chunk {
    /// Offset of `data[0]`.
    pub offset: u64,
    /// The bytes.
    pub data: Bytes,
}

/// Descriptive fields fixed at spawn.
#[derive(Debug, Clone)]
pub struct SessionMeta {
    /// Program.
    pub command: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Working directory, if given.
    pub cwd: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Kill after this long idle; zero means never.
    pub idle_timeout: Duration,
}

struct Subscriber {
    id: u64,
    tx: flume::Sender<Chunk>,
    lossless: bool,
}

/// The terminal's live ends; gone once the session has ended.
struct Io {
    master: OwnedFd,
    input: flume::Sender<Bytes>,
}

struct State {
    ring: OutputRing,
    subscribers: Vec<Subscriber>,
    next_subscriber: u64,
    cols: u16,
    rows: u16,
    io: Option<Io>,
    exit: Option<ExitStatus>,
    paste: PasteMode,
}

/// Tracks bracketed-paste mode (DECSET 2004) from the program's output.
#[derive(Default, Debug)]
pub struct PasteMode {
    on: bool,
    /// The end of the previous chunk, in case a mode sequence is split across reads.
    tail: Vec<u8>,
}

const PASTE_ON: &[u8] = b"\x1b[?2004h";
const PASTE_OFF: &[u8] = b"\x1b[?2004l";

impl PasteMode {
    /// Updates the mode from a chunk of output.
    pub fn update(&mut self, data: &[u8]) {
        if !data.contains(&0x1b) && self.tail.is_empty() {
            return;
        }
        let mut joined = std::mem::take(&mut self.tail);
        joined.extend_from_slice(data);
        let last = |pat: &[u8]| joined.windows(pat.len()).rposition(|w| w == pat);
        match (last(PASTE_ON), last(PASTE_OFF)) {
            (Some(on), Some(off)) => self.on = on > off,
            (Some(_), None) => self.on = true,
            (None, Some(_)) => self.on = false,
            (None, None) => {}
        }
        // Keep a partial escape sequence for the next chunk.
        let keep = PASTE_ON.len() - 1;
        let tail = &joined[joined.len().saturating_sub(keep)..];
        if let Some(esc) = tail.iter().rposition(|b| *b == 0x1b) {
            self.tail = tail[esc..].to_vec();
        }
    }

    /// Whether the program has bracketed paste on.
    pub fn on(&self) -> bool {
        self.on
    }
}

/// Why a request on a session could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The child has exited; its terminal is closed.
    #[error("session {0} has exited")]
    Exited(SessionId),
    /// An offset past the end of the output.
    #[error("since {since} is past the end of the output ({end})")]
    SinceBeyondEnd {
        /// Requested.
        since: u64,
        /// Current end.
        end: u64,
    },
    /// The OS refused.
    #[error("{0}")]
    Os(String),
}

/// A PTY session.
pub struct Session {
    /// Its id.
    pub id: SessionId,
    /// The child's pid and process group.
    pub pid: u32,
    /// Fixed facts from the spawn.
    pub meta: SessionMeta,
    created_at_ms: u64,
    activity_ms: AtomicU64,
    output_ms: AtomicU64,
    leases: AtomicUsize,
    state: Mutex<State>,
    exit_tx: watch::Sender<Option<ExitStatus>>,
    /// Cancelled to ask the lifecycle task to end the session.
    pub end: CancellationToken,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("id", &self.id).field("pid", &self.pid).finish()
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Session {
    /// A running session around a spawned child.
    pub fn new(
        id: SessionId,
        pid: u32,
        meta: SessionMeta,
        replay_bytes: usize,
        (cols, rows): (u16, u16),
        master: OwnedFd,
        input: flume::Sender<Bytes>,
    ) -> Session {
        let now = now_ms();
        Session {
            id,
            pid,
            meta,
            created_at_ms: now,
            activity_ms: AtomicU64::new(now),
            output_ms: AtomicU64::new(now),
            leases: AtomicUsize::new(0),
            state: Mutex::new(State {
                ring: OutputRing::new(replay_bytes),
                subscribers: Vec::new(),
                next_subscriber: 1,
                cols,
                rows,
                io: Some(Io { master, input }),
                exit: None,
                paste: PasteMode::default(),
            }),
            exit_tx: watch::channel(None).0,
            end: CancellationToken::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not take every later request on this session down too.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks input, output or a client coming or going.
    pub fn touch(&self) {
        self.activity_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// How long since the last activity.
    pub fn idle_for(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.activity_ms.load(Ordering::Relaxed)))
    }

    /// Connections attached right now.
    pub fn attached(&self) -> usize {
        self.state().subscribers.len()
    }

    /// True while a client is attached or holds a lease: the idle clock does not run.
    pub fn held(&self) -> bool {
        self.leases.load(Ordering::Relaxed) > 0 || self.attached() > 0
    }

    /// Takes a lease (one per connection; the connection keeps count).
    pub fn lease(&self) {
        self.leases.fetch_add(1, Ordering::Relaxed);
        self.touch();
    }

    /// Returns a lease.
    pub fn release(&self) {
        self.leases.fetch_sub(1, Ordering::Relaxed);
        self.touch();
    }

    /// How long since the last output byte.
    pub fn quiet_for(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.output_ms.load(Ordering::Relaxed)))
    }

    /// Whether the program has bracketed-paste mode on.
    pub fn bracketed_paste(&self) -> bool {
        self.state().paste.on()
    }

    /// Records output from the reader thread and hands it to every subscriber: lossless
    /// ones are waited for (this blocks only this session's reader thread), lossy ones
    /// that are full simply miss the chunk and later see a gap.
    pub fn push_output(&self, data: &[u8]) {
        let chunk_data = Bytes::copy_from_slice(data);
        let (offset, targets) = {
            let mut st = self.state();
            let offset = st.ring.push(data);
            st.paste.update(data);
            st.subscribers.retain(|s| !s.tx.is_disconnected());
            let targets: Vec<_> =
                st.subscribers.iter().map(|s| (s.tx.clone(), s.lossless)).collect();
            (offset, targets)
        };
        self.touch();
        self.output_ms.store(now_ms(), Ordering::Relaxed);
        for (tx, lossless) in targets {
            let chunk = Chunk { offset, data: chunk_data.clone() };
            // A gone subscriber is pruned on the next push; a full lossy one misses this chunk.
            if lossless {
                let _ = tx.send(chunk);
            } else {
                let _ = tx.try_send(chunk);
            }
        }
    }

    /// Replays from `since` and, while the session runs, subscribes to what follows, in
    /// one step so that nothing is missed or sent twice. Returns the replay, the output
    /// end at that moment, and the subscription (none once the session has exited).
    pub fn subscribe(
        self: &Arc<Self>,
        since: Option<u64>,
        lossless: bool,
    ) -> Result<(Replay, u64, Option<Subscription>), SessionError> {
        let mut st = self.state();
        let end = st.ring.end();
        if let Some(since) = since.filter(|s| *s > end) {
            return Err(SessionError::SinceBeyondEnd { since, end });
        }
        let replay = st.ring.since(since);
        let sub = if st.exit.is_none() {
            let id = st.next_subscriber;
            st.next_subscriber += 1;
            let (tx, rx) = flume::bounded(SUBSCRIBER_DEPTH);
            st.subscribers.push(Subscriber { id, tx, lossless });
            Some(Subscription { session: self.clone(), id, rx })
        } else {
            None
        };
        drop(st);
        self.touch();
        Ok((replay, end, sub))
    }

    fn unsubscribe(&self, id: u64) {
        self.state().subscribers.retain(|s| s.id != id);
        self.touch();
    }

    /// What the ring still holds of `[from, to)`.
    pub fn read_range(&self, from: u64, to: u64) -> Replay {
        self.state().ring.range(from, to)
    }

    /// Total output so far.
    pub fn output_end(&self) -> u64 {
        self.state().ring.end()
    }

    /// Queues bytes for the terminal; waits while the writer thread's queue is full.
    pub async fn input(&self, data: Bytes) -> Result<(), SessionError> {
        let tx = self.state().io.as_ref().map(|io| io.input.clone());
        let tx = tx.ok_or(SessionError::Exited(self.id))?;
        self.touch();
        tx.send_async(data).await.map_err(|_| SessionError::Exited(self.id))
    }

    /// Sets the terminal size; the kernel sends the foreground group SIGWINCH.
    pub fn resize(&self, cols: u16, rows: u16) -> Result<(), SessionError> {
        let mut st = self.state();
        let io = st.io.as_ref().ok_or(SessionError::Exited(self.id))?;
        crate::pty::set_size(&io.master, cols, rows)
            .map_err(|e| SessionError::Os(format!("resize: {e}")))?;
        st.cols = cols;
        st.rows = rows;
        Ok(())
    }

    /// The memory this session's record keeps once exited: its output window and its
    /// descriptive fields, plus a fixed allowance for the structures around them.
    pub fn retained_bytes(&self) -> usize {
        const OVERHEAD: usize = 1024;
        let meta = &self.meta;
        let text = meta.command.len()
            + meta.args.iter().map(String::len).sum::<usize>()
            + meta.cwd.as_ref().map_or(0, String::len)
            + meta.labels.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        OVERHEAD + text + self.state().ring.held()
    }

    /// The exit status, once the session has ended.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.state().exit
    }

    /// Resolves when the session has ended.
    pub async fn wait(&self) -> ExitStatus {
        let mut rx = self.exit_tx.subscribe();
        let status = rx.wait_for(Option::is_some).await.map(|s| *s);
        // The sender lives as long as `self`, so the wait cannot fail; be total anyway.
        status.ok().flatten().unwrap_or(ExitStatus { code: None, signal: None })
    }

    /// Records the exit, closes the terminal and ends every subscription (after they
    /// drain, each attachment sends its exit event).
    pub fn finish(&self, status: ExitStatus) {
        let mut st = self.state();
        if st.exit.is_some() {
            return;
        }
        st.exit = Some(status);
        st.io = None;
        st.subscribers.clear();
        drop(st);
        self.exit_tx.send_replace(Some(status));
    }

    /// The wire view of this session.
    pub fn info(&self) -> SessionInfo {
        let st = self.state();
        SessionInfo {
            session: self.id,
            pid: self.pid,
            command: self.meta.command.clone(),
            args: self.meta.args.clone(),
            cwd: self.meta.cwd.clone(),
            labels: self.meta.labels.clone(),
            cols: st.cols,
            rows: st.rows,
            state: if st.exit.is_some() { SessionState::Exited } else { SessionState::Running },
            created_at_ms: self.created_at_ms,
            last_activity_ms: self.activity_ms.load(Ordering::Relaxed),
            attached: st.subscribers.len() as u32,
            output_offset: st.ring.end(),
            idle_timeout_ms: self.meta.idle_timeout.as_millis() as u64,
            exit: st.exit,
        }
    }
}

/// A live feed of a session's output. Dropping it unsubscribes.
pub struct Subscription {
    session: Arc<Session>,
    id: u64,
    /// Chunks in offset order; disconnected once the session has ended.
    pub rx: flume::Receiver<Chunk>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.session.unsubscribe(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::PasteMode;

    #[test]
    fn paste_mode_follows_the_last_sequence() {
        let mut m = PasteMode::default();
        m.update(b"prompt \x1b[?2004h$ ");
        assert!(m.on());
        m.update(b"\x1b[?2004l\r\noutput\x1b[?2004h");
        assert!(m.on());
        m.update(b"\x1b[?2004l");
        assert!(!m.on());
    }

    #[test]
    fn paste_mode_sequence_split_across_chunks() {
        let mut m = PasteMode::default();
        m.update(b"abc\x1b[?20");
        assert!(!m.on());
        m.update(b"04h$ ");
        assert!(m.on());
        m.update(b"x\x1b");
        m.update(b"[?2004l");
        assert!(!m.on());
    }
}
