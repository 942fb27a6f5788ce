//! One PTY session: the record every request works on (`Session`), its only constructor
//! (`start`), its output and the taps that observe it (`output`, `paste`, `marks`,
//! `screen`), and its life
//! from spawn to retirement (`lifecycle`, with the reasons a session ends).

pub mod handover;
pub mod lifecycle;
pub mod marks;
pub mod output;
pub mod paste;
pub mod screen;
pub mod start;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ipc_proto::{ExitStatus, SessionId, SessionInfo, SessionState};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use self::lifecycle::EndReason;
use self::marks::{PromptMarks, RunClaim, ShellState};
pub use self::output::{AttachMode, Backlog, Chunk, Held, OutputTap};
use self::output::{BeyondEnd, Output};
use self::paste::PasteMode;
use self::screen::{Screen, Snapshot};
use crate::pty_io::Input;
use crate::ring::Replay;
use crate::shell_integration::Integration;

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
    /// The shell integration it was started with (prompt marks will come).
    pub integration: Integration,
    /// Who started it.
    pub origin: Origin,
    /// Its cgroup directory, when it has one.
    pub cgroup: Option<std::path::PathBuf>,
}

/// Who started a session, for the pool's shares, and what it is tied to.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    /// The spawner's uid.
    pub uid: u32,
    /// The spawner's primary gid.
    pub gid: u32,
    /// Interactive or agent.
    pub class: crate::admission::Class,
    /// What ends it besides its program.
    pub tie: Tie,
}

/// What a session is tied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tie {
    /// Nothing: it runs until its program ends or someone ends it.
    Free,
    /// The connection that spawned it (`close_with_connection`): it ends when that closes.
    Connection,
}

/// What a session keeps of its past.
#[derive(Debug, Clone, Copy)]
pub struct Keep {
    /// Bytes of raw output, for replay by offset.
    pub replay_bytes: usize,
    /// Lines of screen history; `None`: no screen model at all (`ptyd --screen off`).
    pub scrollback_lines: Option<usize>,
}

/// The session has no screen model (`ptyd --screen off`).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("ptyd runs with --screen off: sessions keep no screen")]
pub struct NoScreen;

/// The terminal's live ends; gone once the session has ended.
struct Io {
    master: OwnedFd,
    input: Arc<Input>,
}

/// The terminal: its size, its live ends, and how it ended.
struct Terminal {
    cols: u16,
    rows: u16,
    io: Option<Io>,
    exit: Option<ExitStatus>,
    /// The program's status as soon as it was reaped, before the session has finished
    /// ending (a live upgrade in between carries the session as exited).
    reaped: Option<ExitStatus>,
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

impl From<BeyondEnd> for SessionError {
    fn from(BeyondEnd { since, end }: BeyondEnd) -> Self {
        SessionError::SinceBeyondEnd { since, end }
    }
}

/// Whether an input write starts a new exchange with the program (moving the session's
/// input mark) or continues one (the Enter after a submitted text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputMark {
    Start,
    Continue,
}

/// A PTY session.
pub struct Session {
    /// Its id.
    pub id: SessionId,
    /// The child's pid and process group.
    pub pid: u32,
    /// Fixed facts from the spawn.
    pub meta: SessionMeta,
    keep: Keep,
    created_at_ms: u64,
    activity_ms: AtomicU64,
    output_ms: AtomicU64,
    /// The output offset when the latest input began: where an answer to it can start.
    input_mark: AtomicU64,
    leases: AtomicUsize,
    /// Until when (ms since the epoch) a lease held when the session crossed a live
    /// upgrade still holds it: its connection closed with the old image, and its client
    /// gets this long to reconnect and lease again.
    carried_lease_until_ms: AtomicU64,
    /// Live upgrades of the daemon this session crossed.
    upgrades: u32,
    output: Output,
    paste: Arc<PasteMode>,
    marks: Arc<PromptMarks>,
    screen: Option<Arc<Screen>>,
    terminal: Mutex<Terminal>,
    exit_tx: watch::Sender<Option<ExitStatus>>,
    /// The first reason someone asked the session to end, and the signal for it.
    end: Mutex<Option<EndReason>>,
    end_requested: CancellationToken,
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
    /// A running session around a spawned child; only `start` builds one.
    fn new(
        id: SessionId,
        pid: u32,
        meta: SessionMeta,
        keep: Keep,
        (cols, rows): (u16, u16),
        master: OwnedFd,
        input: Input,
    ) -> Session {
        let now = now_ms();
        let output = Output::new(keep.replay_bytes);
        let paste = Arc::new(PasteMode::default());
        output.add_tap(paste.clone());
        let marks = Arc::new(PromptMarks::default());
        output.add_tap(marks.clone());
        let screen = keep.scrollback_lines.map(|lines| Screen::new(cols, rows, lines));
        if let Some(screen) = &screen {
            output.add_tap(screen.clone());
        }
        Session {
            id,
            pid,
            meta,
            keep,
            created_at_ms: now,
            activity_ms: AtomicU64::new(now),
            input_mark: AtomicU64::new(0),
            output_ms: AtomicU64::new(now),
            leases: AtomicUsize::new(0),
            carried_lease_until_ms: AtomicU64::new(0),
            upgrades: 0,
            output,
            paste,
            marks,
            screen,
            terminal: Mutex::new(Terminal {
                cols,
                rows,
                io: Some(Io { master, input: Arc::new(input) }),
                exit: None,
                reaped: None,
            }),
            exit_tx: watch::channel(None).0,
            end: Mutex::new(None),
            end_requested: CancellationToken::new(),
        }
    }

    fn terminal(&self) -> MutexGuard<'_, Terminal> {
        // A panic elsewhere must not take every later request on this session down too.
        self.terminal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the lifecycle to end the session. The first reason given is the one kept.
    pub fn request_end(&self, reason: EndReason) {
        let mut end = self.end.lock().unwrap_or_else(|p| p.into_inner());
        if end.is_none() && self.exit_status().is_none() {
            *end = Some(reason);
            self.end_requested.cancel();
        }
    }

    /// Resolves with the reason once someone asked the session to end.
    pub(crate) async fn end_requested(&self) -> EndReason {
        self.end_requested.cancelled().await;
        let end = self.end.lock().unwrap_or_else(|p| p.into_inner());
        (*end).unwrap_or(EndReason::Killed)
    }

    /// Why the session ended (or is ending): the reason asked for, `Exited` when the
    /// program ended by itself, `None` while it runs.
    pub fn end_reason(&self) -> Option<EndReason> {
        let asked = *self.end.lock().unwrap_or_else(|p| p.into_inner());
        asked.or_else(|| self.exit_status().map(|_| EndReason::Exited))
    }

    /// Adds an observer of the session's output from now on.
    pub fn add_tap(&self, tap: Arc<dyn OutputTap>) {
        self.output.add_tap(tap);
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
        self.output.subscribers()
    }

    /// True while a client is attached or holds a lease: the idle clock does not run.
    pub fn held(&self) -> bool {
        self.leases.load(Ordering::Relaxed) > 0
            || self.attached() > 0
            || now_ms() < self.carried_lease_until_ms.load(Ordering::Relaxed)
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

    /// Returns a lease whose connection a live upgrade closed: it holds the session for
    /// [`handover::CARRIED_LEASE`] more, across the upgrade, for its client to come back.
    pub fn release_for_upgrade(&self) {
        let until = now_ms() + handover::CARRIED_LEASE.as_millis() as u64;
        self.carried_lease_until_ms.fetch_max(until, Ordering::Relaxed);
        self.leases.fetch_sub(1, Ordering::Relaxed);
    }

    /// How long since the last output byte.
    pub fn quiet_for(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.output_ms.load(Ordering::Relaxed)))
    }

    /// Where the session's shell stands, as its prompt marks tell.
    pub fn shell(&self) -> ShellState {
        self.marks.shell()
    }

    /// The shell for one `run`, unless another `run` has it.
    pub fn claim_shell(&self) -> Option<RunClaim> {
        self.marks.claim()
    }

    /// Whether the program has bracketed-paste mode on.
    pub fn bracketed_paste(&self) -> bool {
        self.paste.on()
    }

    /// Records output from the output task (see [`Output::push`]); the output task awaits
    /// the returned backlog (lossless subscribers that were full) before it reads again.
    pub fn record_output(&self, data: &[u8]) -> Backlog {
        let backlog = self.output.push(data);
        self.touch();
        self.output_ms.store(now_ms(), Ordering::Relaxed);
        backlog
    }

    /// Replays from `since` and, while the session runs, subscribes to what follows, in
    /// one step so that nothing is missed or sent twice. Returns the replay, the output
    /// end at that moment, and the subscription (none once the session has exited).
    pub fn subscribe(
        self: &Arc<Self>,
        since: Option<u64>,
        mode: AttachMode,
    ) -> Result<(Replay, u64, Option<Subscription>), SessionError> {
        let attached = self.output.subscribe(since, mode)?;
        let sub = attached.feed.map(|(id, rx)| Subscription {
            session: self.clone(),
            id,
            rx,
            carried: None,
        });
        self.touch();
        Ok((attached.replay, attached.end, sub))
    }

    fn unsubscribe(&self, id: u64) {
        self.output.unsubscribe(id);
        self.touch();
    }

    /// What the ring still holds of `[from, to)`.
    pub fn read_range(&self, from: u64, to: u64) -> Replay {
        self.output.range(from, to)
    }

    /// Total output so far.
    pub fn output_end(&self) -> u64 {
        self.output.end()
    }

    /// Offset of the oldest output byte still held for replay.
    pub fn output_start(&self) -> u64 {
        self.output.start()
    }

    /// Writes bytes to the terminal (see [`Input`]); waits while its queue is full.
    /// Returns the session's input mark: the output offset at which anything the
    /// program prints in answer can start (`InputMark::Continue` leaves it where an
    /// earlier write of the same request put it).
    pub async fn input(&self, data: Bytes, mark: InputMark) -> Result<u64, SessionError> {
        let tx = self.terminal().io.as_ref().map(|io| io.input.clone());
        let tx = tx.ok_or(SessionError::Exited(self.id))?;
        self.touch();
        // Read before the bytes reach the program, so no answer can precede it.
        let at = match mark {
            InputMark::Start => {
                let end = self.output_end();
                self.input_mark.fetch_max(end, Ordering::AcqRel).max(end)
            }
            InputMark::Continue => self.input_mark(),
        };
        tx.send(data).await.map_err(|_| SessionError::Exited(self.id))?;
        Ok(at)
    }

    /// The output offset when the latest input began (0 before any): where `wait_for`
    /// without `since` starts, so an answer printed before the call is not missed.
    pub fn input_mark(&self) -> u64 {
        self.input_mark.load(Ordering::Acquire)
    }

    /// Sets the terminal size; the kernel sends the foreground group SIGWINCH.
    pub fn resize(&self, cols: u16, rows: u16) -> Result<(), SessionError> {
        let mut term = self.terminal();
        let io = term.io.as_ref().ok_or(SessionError::Exited(self.id))?;
        crate::pty::set_size(&io.master, cols, rows)
            .map_err(|e| SessionError::Os(format!("resize: {e}")))?;
        term.cols = cols;
        term.rows = rows;
        // Under the terminal lock, so the screen's size changes in the same order as the
        // terminal's; output drawn for the new size follows the kernel's SIGWINCH.
        if let Some(screen) = &self.screen {
            screen.resize(cols, rows);
        }
        Ok(())
    }

    /// The rows the terminal shows now, and the output offset they reflect.
    pub fn screen_text(&self) -> Result<(u64, Vec<String>), NoScreen> {
        Ok(self.screen.as_ref().ok_or(NoScreen)?.text())
    }

    /// What the terminal shows now, with up to `scrollback` lines of history.
    pub fn snapshot(&self, scrollback: usize) -> Result<Snapshot, NoScreen> {
        Ok(self.screen.as_ref().ok_or(NoScreen)?.snapshot(scrollback))
    }

    /// Whether the session keeps a screen.
    pub fn has_screen(&self) -> bool {
        self.screen.is_some()
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
        OVERHEAD + text + self.output.held()
    }

    /// The exit status, once the session has ended.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.terminal().exit
    }

    /// Resolves when the session has ended.
    pub async fn wait(&self) -> ExitStatus {
        let mut rx = self.exit_tx.subscribe();
        let status = rx.wait_for(Option::is_some).await.map(|s| *s);
        // The sender lives as long as `self`, so the wait cannot fail; be total anyway.
        status.ok().flatten().unwrap_or(ExitStatus { code: None, signal: None })
    }

    /// Notes the program's status as soon as it is reaped (the session then ends in steps).
    pub fn reaped(&self, status: ExitStatus) {
        self.terminal().reaped = Some(status);
    }

    /// Whether every input sent has been written to the terminal.
    pub fn input_drained(&self) -> bool {
        self.terminal().io.as_ref().is_none_or(|io| io.input.is_drained())
    }

    /// Records the exit, closes the terminal and ends every subscription (after they
    /// drain, each attachment sends its exit event).
    pub fn finish(&self, status: ExitStatus) {
        let mut term = self.terminal();
        if term.exit.is_some() {
            return;
        }
        term.exit = Some(status);
        term.io = None;
        drop(term);
        self.output.close();
        self.exit_tx.send_replace(Some(status));
    }

    /// The terminal's size: columns and rows.
    pub fn size(&self) -> (u16, u16) {
        let term = self.terminal();
        (term.cols, term.rows)
    }

    /// The wire view of this session.
    pub fn info(&self) -> SessionInfo {
        let (cols, rows, exit) = {
            let term = self.terminal();
            (term.cols, term.rows, term.exit)
        };
        SessionInfo {
            session: self.id,
            pid: self.pid,
            command: self.meta.command.clone(),
            args: self.meta.args.clone(),
            cwd: exit
                .is_none()
                .then(|| std::fs::read_link(format!("/proc/{}/cwd", self.pid)).ok())
                .flatten()
                .map(|p| p.to_string_lossy().into_owned())
                .or_else(|| self.meta.cwd.clone()),
            labels: self.meta.labels.clone(),
            cols,
            rows,
            state: if exit.is_some() { SessionState::Exited } else { SessionState::Running },
            created_at_ms: self.created_at_ms,
            last_activity_ms: self.activity_ms.load(Ordering::Relaxed),
            attached: self.output.subscribers() as u32,
            output_offset: self.output.end(),
            idle_timeout_ms: self.meta.idle_timeout.as_millis() as u64,
            exit,
            end_reason: self.end_reason().map(EndReason::wire),
            upgrades: self.upgrades,
        }
    }
}

/// A live feed of a session's output. Dropping it unsubscribes.
pub struct Subscription {
    session: Arc<Session>,
    id: u64,
    /// Chunks in offset order; disconnected once the session has ended.
    pub rx: flume::Receiver<Chunk>,
    /// A chunk taken from `rx` that did not fit the last merged one.
    carried: Option<Chunk>,
}

impl Subscription {
    /// The next chunk, with whatever follows it that is already queued merged in, up to
    /// `max` bytes: a reader that fell behind catches up in fewer, larger pieces, and a
    /// lone chunk waits for nothing. `None` once the session has ended and all is taken.
    pub async fn next_merged(&mut self, max: usize) -> Option<Chunk> {
        let first = match self.carried.take() {
            Some(chunk) => chunk,
            None => self.rx.recv_async().await.ok()?,
        };
        let mut merge = output::Merge::new(first, max);
        while let Ok(next) = self.rx.try_recv() {
            if let Err(next) = merge.absorb(next) {
                self.carried = Some(next);
                break;
            }
        }
        Some(merge.finish())
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.session.unsubscribe(self.id);
    }
}
