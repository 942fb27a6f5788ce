//! Every message of the ptyd IPC protocol: what a client sends (`Request`) and what
//! the daemon sends back (`DaemonMessage`: replies to requests, and events).
//!
//! Field names are the wire names. Optional fields carry `#[serde(default)]` so that a
//! newer peer may add fields without breaking an older one; an unknown `type` decodes
//! to an explicit `Unknown` variant instead of failing the whole frame.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ErrorCode;

/// Identifies one PTY session for its whole life, including after it exited.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
#[serde(transparent)]
pub struct SessionId(pub Uuid);

impl SessionId {
    /// A fresh random id.
    pub fn new() -> Self {
        SessionId(Uuid::new_v4())
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for SessionId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(SessionId)
    }
}

fn default_cols() -> u16 {
    80
}

fn default_rows() -> u16 {
    24
}

/// Messages a client sends. Every request travels with a nonzero `id` that its reply echoes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Must be the first frame on a connection.
    Hello(HelloRequest),
    /// Start a command in a new PTY.
    Spawn(SpawnRequest),
    /// Replay output from an offset, then stream live output and the exit.
    Attach(AttachRequest),
    /// Stop streaming a session's output to this connection.
    Detach(SessionRef),
    /// Acknowledge output of an attachment made with a `window`.
    Ack(AckRequest),
    /// Write the frame's binary payload to the session's terminal.
    Input(SessionRef),
    /// Change the terminal size (the child gets SIGWINCH).
    Resize(ResizeRequest),
    /// End a session, or deliver one signal to its process group.
    Kill(KillRequest),
    /// Every session the daemon knows, running or recently exited.
    List,
    /// One session's details.
    Info(SessionRef),
    /// Resolve when the session has exited, with its status.
    Wait(WaitRequest),
    /// Resolve when a regex matches output after an offset.
    WaitFor(WaitForRequest),
    /// Resolve when the session has printed nothing for a while.
    WaitQuiet(WaitQuietRequest),
    /// Type text as one submitted input: bracketed paste when enabled, then Enter.
    Submit(SubmitRequest),
    /// Run a command to completion and return its status and output.
    Exec(ExecRequest),
    /// Type a command into a session's live shell; answer when it has finished.
    Run(RunRequest),
    /// Output after an offset, without attaching.
    Read(ReadRequest),
    /// Hold the session against its idle timeout while this connection lives.
    Lease(SessionRef),
    /// Give a lease back.
    Release(SessionRef),
    /// Stream daemon-wide session events (spawned, exited, idle-killed, resized).
    Subscribe,
    /// What the session's terminal shows: text, cursor, title, modes, and optionally the
    /// bytes that reproduce it.
    Screen(ScreenRequest),
    /// Replace the running daemon with a binary (the one it was started from when none is
    /// named) without ending any session; answered by the new image with `upgraded`.
    Upgrade(UpgradeRequest),
    /// A request type this daemon does not know; answered with `UnknownRequest`.
    #[serde(other)]
    Unknown,
}

impl Request {
    /// The wire name of this request's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Hello(_) => "hello",
            Request::Spawn(_) => "spawn",
            Request::Attach(_) => "attach",
            Request::Detach(_) => "detach",
            Request::Ack(_) => "ack",
            Request::Input(_) => "input",
            Request::Resize(_) => "resize",
            Request::Kill(_) => "kill",
            Request::List => "list",
            Request::Info(_) => "info",
            Request::Wait(_) => "wait",
            Request::WaitFor(_) => "wait_for",
            Request::WaitQuiet(_) => "wait_quiet",
            Request::Submit(_) => "submit",
            Request::Exec(_) => "exec",
            Request::Run(_) => "run",
            Request::Read(_) => "read",
            Request::Lease(_) => "lease",
            Request::Release(_) => "release",
            Request::Subscribe => "subscribe",
            Request::Screen(_) => "screen",
            Request::Upgrade(_) => "upgrade",
            Request::Unknown => "unknown",
        }
    }
}

/// The opening handshake.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HelloRequest {
    /// The protocol version the client speaks.
    pub protocol_version: u32,
    /// Free text naming the client, for logs (e.g. `ptyctl/0.1.0`).
    #[serde(default)]
    pub client: String,
}

/// `upgrade`: the binary to replace the daemon with.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct UpgradeRequest {
    /// An absolute path; absent: the path the daemon was started from, read anew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
}

/// Reply to `upgrade`, sent by the daemon's new image once it serves.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct UpgradeReply {
    /// The release before.
    pub from_version: String,
    /// The release now running.
    pub to_version: String,
    /// The binary now running.
    pub binary: String,
    /// The daemon's process id, the same before and after.
    pub pid: u32,
    /// Sessions carried over, running and exited.
    pub sessions: usize,
    /// Upgrades this daemon process has been through, this one included.
    pub upgrades: u32,
    /// From the request to serving again, in milliseconds.
    pub duration_ms: u64,
}

/// A request that names one session.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SessionRef {
    /// The session.
    pub session: SessionId,
}

/// Start `command` with `args` in a new PTY. The command is executed directly (no shell).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SpawnRequest {
    /// Program name (looked up in `PATH`) or path.
    pub command: String,
    /// Arguments, not including the program name.
    #[serde(default)]
    pub args: Vec<String>,
    /// Variables set on top of the daemon's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; the daemon's own when absent.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Terminal width in columns.
    #[serde(default = "default_cols")]
    pub cols: u16,
    /// Terminal height in rows.
    #[serde(default = "default_rows")]
    pub rows: u16,
    /// Free-form labels, returned by `list` and `info`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Kill the session after this long without input, output or an attached client.
    /// Absent: the daemon's default. 0: never.
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    /// Size of the session's output replay window. Absent: the daemon's default.
    #[serde(default)]
    pub replay_bytes: Option<usize>,
    /// Attach this connection before the child runs, so no output can be missed.
    #[serde(default)]
    pub attach: Option<AttachMode>,
    /// End the session when the connection that spawned it closes (like an ssh command
    /// whose client went away).
    #[serde(default)]
    pub close_with_connection: bool,
    /// A person's terminal (a browser terminal): it may use the slots the daemon reserves
    /// for interactive sessions (`--interactive-reserve`). Agents leave it false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interactive: bool,
}

impl SpawnRequest {
    /// A request for `command args…` with every other field at its default.
    pub fn new(
        command: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        SpawnRequest {
            command: command.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
            cwd: None,
            cols: default_cols(),
            rows: default_rows(),
            labels: BTreeMap::new(),
            idle_timeout_ms: None,
            replay_bytes: None,
            attach: None,
            close_with_connection: false,
            interactive: false,
        }
    }
}

/// How output reaches an attached client.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AttachMode {
    /// When true, the session's output waits for this client (like a terminal under
    /// XOFF) instead of dropping bytes the client is too slow to take. When false, a
    /// slow client receives `dropped` events and the session never waits for it.
    #[serde(default)]
    pub lossless: bool,
}

/// Attach to a session's output.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AttachRequest {
    /// The session.
    pub session: SessionId,
    /// Resume after this absolute output offset. Absent: replay the whole window.
    #[serde(default)]
    pub since: Option<u64>,
    /// Flow behaviour; lossy when absent.
    #[serde(default)]
    pub lossless: bool,
    /// Whether to start from the screen instead of from bytes. Absent: `never`.
    #[serde(default)]
    pub screen: ScreenStart,
    /// Flow control of this attachment alone: output is sent only while the events sent
    /// and not yet acknowledged (`ack`) cost less than this, each its bytes plus 64.
    /// Absent: the connection's own backpressure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u64>,
}

/// `ack`: the client has taken a windowed attachment's output up to `offset`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AckRequest {
    /// The session.
    pub session: SessionId,
    /// The offset after the last byte taken.
    pub offset: u64,
}

/// How an attach starts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ScreenStart {
    /// Bytes only, as ever: the replay from `since` (or the window), with `dropped` for
    /// what left it.
    #[default]
    Never,
    /// Bytes when `since` is inside the replay window; otherwise (no `since`, or one
    /// older than the window) the screen, then live output from the screen's offset.
    Auto,
    /// The screen, then live output from its offset.
    Always,
}
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ResizeRequest {
    /// The session.
    pub session: SessionId,
    /// New width.
    pub cols: u16,
    /// New height.
    pub rows: u16,
}

/// End a session, or send it one signal.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct KillRequest {
    /// The session.
    pub session: SessionId,
    /// Absent: end the session (SIGHUP to its process group, SIGKILL after the grace).
    /// Present (`"INT"`, `"SIGTERM"`, `"9"`): deliver only that signal to the group.
    #[serde(default)]
    pub signal: Option<String>,
}

/// Wait for a session to exit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct WaitRequest {
    /// The session.
    pub session: SessionId,
    /// Give up with a `Timeout` error after this long. Absent: wait for ever.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Wait until `pattern` matches output produced after `since`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct WaitForRequest {
    /// The session.
    pub session: SessionId,
    /// A regular expression (Rust `regex` syntax), matched against the raw output bytes.
    pub pattern: String,
    /// Search output from this offset on. Absent: only output produced after the call.
    #[serde(default)]
    pub since: Option<u64>,
    /// Fail with `Timeout` after this long. Absent: wait for ever.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// What the pattern is matched against. Absent: the output bytes.
    #[serde(default)]
    pub on: MatchOn,
}

/// What a `wait_for` pattern is matched against.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum MatchOn {
    /// The raw output bytes from `since` on.
    #[default]
    Output,
    /// The text the screen shows (its rows joined by `\n`), checked now and after every
    /// output: for programs that redraw in place (TUIs), whose bytes never spell it out.
    Screen,
}

/// Wait until the session has printed nothing for `quiet_ms`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct WaitQuietRequest {
    /// The session.
    pub session: SessionId,
    /// The silence that counts as quiet.
    pub quiet_ms: u64,
    /// Fail with `Timeout` after this long. Absent: wait for ever.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Type `text` and press Enter, as one submitted input.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SubmitRequest {
    /// The session.
    pub session: SessionId,
    /// The text (may span lines).
    pub text: String,
    /// Pause between the text and the Enter key. Absent: 50 ms.
    #[serde(default)]
    pub settle_ms: Option<u64>,
}

/// Run a command in a new PTY until it exits or times out.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ExecRequest {
    /// Program name (looked up in `PATH`) or path.
    pub command: String,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Variables set on top of the daemon's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Terminal width.
    #[serde(default = "default_cols")]
    pub cols: u16,
    /// Terminal height.
    #[serde(default = "default_rows")]
    pub rows: u16,
    /// Kill the process group after this long. Absent: no limit.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Keep at most this many output bytes (the last ones). Absent and at most: 960 KiB, so
    /// the result fits in one frame.
    #[serde(default)]
    pub max_output: Option<usize>,
}

/// Type a command into the shell of a session and wait until it has finished, as the
/// shell's semantic prompt marks (OSC 133) tell: the shell keeps its directory, variables
/// and history.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RunRequest {
    /// The session, whose shell must be at its prompt.
    pub session: SessionId,
    /// The command line, as typed (it may hold several lines).
    pub command: String,
    /// Interrupt the command (Ctrl-C) after this long. Absent: no limit.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Keep at most this many output bytes (the last ones). Absent and at most: 960 KiB.
    #[serde(default)]
    pub max_output: Option<usize>,
}

/// Read output after an offset without attaching.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ReadRequest {
    /// The session.
    pub session: SessionId,
    /// Start here. Absent: the oldest byte still held.
    #[serde(default)]
    pub since: Option<u64>,
    /// Return at most this many bytes. Absent: everything held (up to the frame limit).
    #[serde(default)]
    pub max: Option<usize>,
}

/// Asks for a session's screen.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ScreenRequest {
    /// The session.
    pub session: SessionId,
    /// Lines of main-screen history to put before the screen (at most what is kept).
    #[serde(default)]
    pub scrollback: u32,
    /// Also return, as the payload, bytes that reproduce the screen in a fresh terminal of
    /// the same size (contents, colours, cursor, modes, title).
    #[serde(default)]
    pub ansi: bool,
}

/// Which screen buffer a program shows.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ScreenBuffer {
    /// The normal screen, with scrollback.
    Main,
    /// The alternate screen (full-screen programs: vim, top, less).
    Alternate,
    /// A buffer this client does not know.
    #[serde(other)]
    Unknown,
}

/// A session's screen at one output offset.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ScreenReply {
    /// The session.
    pub session: SessionId,
    /// Every output byte before this offset is reflected, none after.
    pub offset: u64,
    /// Size.
    pub cols: u16,
    /// Size.
    pub rows: u16,
    /// Cursor row, from 0 (top of the screen).
    pub cursor_row: u16,
    /// Cursor column, from 0.
    pub cursor_col: u16,
    /// Whether the cursor is shown.
    pub cursor_visible: bool,
    /// The window title the program set (OSC 0/2), or empty.
    pub title: String,
    /// The buffer shown.
    pub buffer: ScreenBuffer,
    /// Text, one string per row with trailing blanks trimmed: first `scrollback_lines`
    /// lines of history, then the `rows` rows of the screen.
    pub lines: Vec<String>,
    /// How many of `lines` are history.
    pub scrollback_lines: u32,
}

/// Messages the daemon sends: replies (carrying the request's `id`) and events (no `id`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DaemonMessage {
    /// Reply to `hello`.
    Hello(HelloReply),
    /// Success with nothing to report (detach, input, resize, kill).
    Ok,
    /// Reply to `spawn`.
    Spawned(SpawnReply),
    /// Reply to `attach`; output events follow.
    Attached(AttachReply),
    /// Reply to `list`.
    Sessions(ListReply),
    /// Reply to `info`.
    Session(SessionInfo),
    /// Reply to `wait`.
    Exited(ExitStatus),
    /// Reply to `wait_for`.
    Matched(MatchReply),
    /// Reply to `wait_quiet`.
    Quiet(QuietReply),
    /// Reply to `submit`.
    Submitted(SubmitReply),
    /// Reply to `exec`; the payload holds the (last) output bytes.
    ExecResult(ExecResult),
    /// Reply to `run`; the payload holds the (last) output bytes of the command.
    RunResult(ExecResult),
    /// Reply to `read`; the payload holds the bytes.
    OutputRange(ReadReply),
    /// Reply to `screen`; with `ansi`, the payload holds the snapshot bytes.
    Screen(ScreenReply),
    /// Reply to `upgrade`, from the new image.
    Upgraded(UpgradeReply),
    /// A failed request, or a refused connection when `id` is absent.
    Error(ErrorReply),
    /// Event: terminal output; the frame's payload holds the bytes.
    Output(OutputEvent),
    /// Event: output this client was too slow for, and which left the replay window.
    Dropped(DroppedEvent),
    /// Event: an attached session exited; no more events follow for it.
    Exit(ExitEvent),
    /// Event (after `subscribe`): something happened to a session.
    Event(DaemonEvent),
    /// Event (after `subscribe`): this client was too slow and missed `count` events.
    EventsDropped(EventsDropped),
    /// A message type this client does not know.
    #[serde(other)]
    Unknown,
}

/// The daemon's half of the handshake.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HelloReply {
    /// The protocol version the daemon speaks.
    pub protocol_version: u32,
    /// The daemon's release, e.g. `0.1.0`.
    pub daemon_version: String,
    /// The daemon's process id.
    pub pid: u32,
}

/// A new session.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SpawnReply {
    /// Its id.
    pub session: SessionId,
    /// The child's pid, which is also its process group id.
    pub pid: u32,
}

/// Where an attachment's output starts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AttachReply {
    /// The session.
    pub session: SessionId,
    /// Offset of the first byte that will be sent.
    pub offset: u64,
    /// Bytes between the requested `since` and `offset` that are no longer kept.
    pub dropped: u64,
    /// The session's output offset at the moment of attaching (end of the replay).
    pub end: u64,
    /// The attach starts from the screen: the frame's payload holds bytes that reproduce
    /// it in a fresh terminal of `cols` × `rows`, as of `offset`, where live output starts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub snapshot: bool,
    /// The snapshot's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cols: Option<u16>,
    /// The snapshot's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u16>,
}

impl AttachReply {
    /// A reply for an attach that starts from bytes (no snapshot).
    pub fn bytes(session: SessionId, offset: u64, dropped: u64, end: u64) -> AttachReply {
        AttachReply { session, offset, dropped, end, snapshot: false, cols: None, rows: None }
    }
}

/// All sessions.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ListReply {
    /// Running sessions and exited ones still retained.
    pub sessions: Vec<SessionInfo>,
    /// Running sessions (slots in use).
    pub active: usize,
    /// Pool capacity.
    pub capacity: usize,
    /// When this daemon process started (ms since the Unix epoch), before any upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_started_at_ms: Option<u64>,
    /// Upgrades this daemon process has been through (`upgrade`): its sessions lived
    /// through as many, or fewer if they started later.
    #[serde(default)]
    pub upgrades: u32,
}

/// The lifecycle state of a session.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// The child runs.
    Running,
    /// The child exited; the record is kept for the retention period.
    Exited,
}

/// A session's details.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SessionInfo {
    /// Its id.
    pub session: SessionId,
    /// The child's pid (and process group).
    pub pid: u32,
    /// Program and arguments.
    pub command: String,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Working directory, if one was given.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Labels given at spawn.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Terminal width.
    pub cols: u16,
    /// Terminal height.
    pub rows: u16,
    /// Running or exited.
    pub state: SessionState,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Last input, output or attach, milliseconds since the Unix epoch.
    pub last_activity_ms: u64,
    /// Connections currently attached.
    pub attached: u32,
    /// Total output bytes so far (the offset the next byte will get).
    pub output_offset: u64,
    /// The session's idle timeout; 0 means never.
    pub idle_timeout_ms: u64,
    /// How it ended, once it has.
    #[serde(default)]
    pub exit: Option<ExitStatus>,
    /// Why it ended (or is ending), once someone asked it to or it exited; absent while it
    /// runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    /// Live upgrades of the daemon this session lived through.
    #[serde(default)]
    pub upgrades: u32,
}

/// Why a session ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The program exited by itself.
    Exited,
    /// A client asked (`kill`, the bridge's delete or grace expiry).
    Killed,
    /// No input, no output and no client for its idle timeout.
    IdleTimeout,
    /// The connection that spawned it with `close_with_connection` closed.
    OwnerGone,
    /// An `exec` ran past its timeout.
    ExecTimeout,
    /// The daemon stopped.
    Shutdown,
    /// The kernel killed it for going past its memory limit (`ptyd --session-memory-max`).
    MemoryLimit,
    /// A reason this client does not know.
    #[serde(other)]
    Unknown,
}

impl EndReason {
    /// The wire name, e.g. `idle_timeout`.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Exited => "exited",
            EndReason::Killed => "killed",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::OwnerGone => "owner_gone",
            EndReason::ExecTimeout => "exec_timeout",
            EndReason::Shutdown => "shutdown",
            EndReason::MemoryLimit => "memory_limit",
            EndReason::Unknown => "unknown",
        }
    }
}

/// How a process ended: exactly one of `code` and `signal` is set.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code, if it exited.
    #[serde(default)]
    pub code: Option<i32>,
    /// Signal number, if a signal killed it.
    #[serde(default)]
    pub signal: Option<i32>,
}

impl ExitStatus {
    /// The shell convention: the code, or 128 + the signal number.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(code), _) => code,
            (None, Some(sig)) => 128 + sig,
            (None, None) => 255,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exited with code {code}"),
            (None, Some(sig)) => write!(f, "killed by signal {sig}"),
            (None, None) => write!(f, "ended with unknown status"),
        }
    }
}

/// A failed request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ErrorReply {
    /// Machine-readable name, e.g. `AtCapacity`.
    pub code: ErrorCode,
    /// Human-readable text, e.g. `pty pool is at capacity (64)`.
    pub message: String,
}

/// Terminal output starting at absolute byte `offset`; the bytes are the frame's payload.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OutputEvent {
    /// The session.
    pub session: SessionId,
    /// Absolute offset of the payload's first byte.
    pub offset: u64,
}

/// Output in `[offset, offset + bytes)` will never reach this client.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DroppedEvent {
    /// The session.
    pub session: SessionId,
    /// First lost byte.
    pub offset: u64,
    /// How many bytes were lost.
    pub bytes: u64,
}

/// An attached session ended. All its output was sent before this event.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ExitEvent {
    /// The session.
    pub session: SessionId,
    /// How it ended.
    #[serde(flatten)]
    pub status: ExitStatus,
}

/// Where a `wait_for` pattern matched.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MatchReply {
    /// The session.
    pub session: SessionId,
    /// Absolute offset of the match's first byte.
    pub offset: u64,
    /// Absolute offset just past the match: resume the next `wait_for` here.
    pub end: u64,
    /// The matched text (invalid UTF-8 replaced).
    pub text: String,
    /// Capture groups 1.., `null` where a group did not take part.
    #[serde(default)]
    pub groups: Vec<Option<String>>,
    /// Bytes after `since` that had already left the replay window and were not searched.
    #[serde(default)]
    pub dropped: u64,
}

/// The session went quiet.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct QuietReply {
    /// The session.
    pub session: SessionId,
    /// The output offset at which it went quiet.
    pub offset: u64,
}

/// How a `submit` was typed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SubmitReply {
    /// True when the program had bracketed-paste mode on and the text was sent as a paste.
    pub bracketed_paste: bool,
    /// The output offset when the text was written: the answer starts at or after it
    /// (older daemons leave it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// The outcome of an `exec`; the frame's payload is the kept output.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ExecResult {
    /// The session that ran it (retained like any exited session).
    pub session: SessionId,
    /// Exit code, if it exited.
    #[serde(default)]
    pub code: Option<i32>,
    /// Signal, if one killed it.
    #[serde(default)]
    pub signal: Option<i32>,
    /// True when the timeout expired and the daemon killed the process group.
    pub timed_out: bool,
    /// True when output was longer than `max_output` (only the last bytes are kept).
    pub truncated: bool,
    /// All output bytes produced.
    pub total_bytes: u64,
    /// From spawn to exit.
    pub duration_ms: u64,
}

/// Output read without attaching; the frame's payload is the bytes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ReadReply {
    /// The session.
    pub session: SessionId,
    /// Offset of the payload's first byte.
    pub offset: u64,
    /// Offset to pass as `since` next time.
    pub next: u64,
    /// Bytes after `since` that had left the replay window.
    pub dropped: u64,
    /// The session's output end now.
    pub end: u64,
}

/// What happened to a session.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DaemonEventKind {
    /// A session started.
    Spawned,
    /// A session's process exited (for any reason); `exit` says how.
    Exited,
    /// A session was killed for being idle (an `exited` event follows).
    IdleKilled,
    /// A session's terminal was resized.
    Resized,
    /// A kind this client does not know.
    #[serde(other)]
    Unknown,
}

/// A daemon-wide event about one session.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DaemonEvent {
    /// What happened.
    pub event: DaemonEventKind,
    /// To which session.
    pub session: SessionId,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `spawned`: the child's pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// `spawned`: the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// `exited`: how it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
    /// `exited`: why it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    /// `resized`: the new width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cols: Option<u16>,
    /// `resized`: the new height.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u16>,
}

impl DaemonEvent {
    /// An event of this kind with none of the kind-specific fields set.
    pub fn new(event: DaemonEventKind, session: SessionId, at_ms: u64) -> DaemonEvent {
        DaemonEvent {
            event,
            session,
            at_ms,
            pid: None,
            command: None,
            exit: None,
            end_reason: None,
            cols: None,
            rows: None,
        }
    }
}

/// Events this subscriber missed because it read too slowly.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EventsDropped {
    /// How many.
    pub count: u64,
}
