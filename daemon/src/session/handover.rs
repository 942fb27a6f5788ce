//! A session crossing into the next daemon image (live upgrade): its record out
//! ([`Session::capture`]) and the session rebuilt from it ([`restore`]). The PTY master
//! crosses open; the output ring, the screen (as the bytes that redraw it), the marks,
//! the clocks and the exit, if any, cross in the handover state.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::marks::PromptMarks;
use super::output::Output;
use super::paste::PasteMode;
use super::screen::Screen;
use super::{now_ms, Io, Keep, Origin, Session, SessionMeta, Terminal, Tie};

/// How long a lease held at a live upgrade keeps holding the session in the new image.
pub const CARRIED_LEASE: Duration = Duration::from_secs(60);
use crate::pty_io::Input;
use crate::upgrade::state::{Blob, LoadError, Loaded, SessionRecord};

impl Session {
    /// The session as it crosses: its output and screen appended to `payload`, its
    /// terminal's master handed to `carry`, which returns the number it will have in the
    /// new image. Call while its output is not being read (see `Output` freezing in the
    /// upgrade), so that the ring ends exactly where the kernel's buffer begins.
    pub fn capture(
        &self,
        payload: &mut Vec<u8>,
        carry: &mut dyn FnMut(BorrowedFd<'_>) -> std::io::Result<RawFd>,
    ) -> std::io::Result<SessionRecord> {
        let (cols, rows, exit, master_fd) = {
            let term = self.terminal();
            // A program already reaped crosses as exited, even while its session is still
            // ending here: the next image will not hear of it again.
            let exit = term.exit.or(term.reaped);
            let fd = match (&term.io, exit) {
                (Some(io), None) => Some(carry(io.master.as_fd())?),
                _ => None,
            };
            (term.cols, term.rows, exit, fd)
        };
        let held = self.output.range(self.output.start(), self.output.end());
        let ring = append(payload, &held.data);
        let screen = self.screen.as_ref().map(|screen| {
            let snap = screen.snapshot(self.keep.scrollback_lines.unwrap_or(0));
            append(payload, &snap.ansi)
        });
        let meta = &self.meta;
        Ok(SessionRecord {
            id: self.id,
            pid: self.pid,
            command: meta.command.clone(),
            args: meta.args.clone(),
            cwd: meta.cwd.clone(),
            labels: meta.labels.clone(),
            idle_timeout_ms: meta.idle_timeout.as_millis() as u64,
            integration: meta.integration,
            replay_bytes: self.keep.replay_bytes,
            scrollback_lines: self.keep.scrollback_lines,
            cols,
            rows,
            created_at_ms: self.created_at_ms,
            activity_ms: self.activity_ms.load(Ordering::Relaxed),
            output_ms: self.output_ms.load(Ordering::Relaxed),
            input_mark: self.input_mark(),
            ring_start: held.offset,
            ring,
            screen,
            shell: self.shell(),
            paste: self.bracketed_paste(),
            uid: meta.origin.uid,
            gid: meta.origin.gid,
            class: meta.origin.class,
            cgroup: meta.cgroup.clone(),
            owned: meta.origin.tie == Tie::Connection,
            master_fd,
            exit,
            end: *self.end.lock().unwrap_or_else(|p| p.into_inner()),
            upgrades: self.upgrades,
            leased: self.leases.load(Ordering::Relaxed) > 0
                || now_ms() < self.carried_lease_until_ms.load(Ordering::Relaxed),
        })
    }
}

fn append(payload: &mut Vec<u8>, bytes: &[u8]) -> Blob {
    let blob = Blob { at: payload.len() as u64, len: bytes.len() as u64 };
    payload.extend_from_slice(bytes);
    blob
}

/// The terminal of a running session that crossed: its master (for resizing) and the
/// input that writes to it.
pub struct Live {
    /// The master, as it crossed.
    pub master: OwnedFd,
    /// Its input.
    pub input: Input,
}

/// Rebuilds the session `record` describes from the state `loaded`; `live` for one whose
/// program still runs.
pub fn restore(
    record: &SessionRecord,
    loaded: &Loaded,
    live: Option<Live>,
) -> Result<Session, LoadError> {
    let keep =
        Keep { replay_bytes: record.replay_bytes, scrollback_lines: record.scrollback_lines };
    let ring = loaded.bytes(record.ring)?;
    let end = record.ring_start + ring.len() as u64;
    let output = Output::restore(keep.replay_bytes, record.ring_start, ring);
    let paste = Arc::new(PasteMode::default());
    let marks = Arc::new(PromptMarks::restore(record.shell));
    let screen = match (record.scrollback_lines, record.screen) {
        (Some(lines), Some(blob)) => {
            let ansi = loaded.bytes(blob)?;
            // The snapshot sets every mode the program had on, bracketed paste included.
            paste.update(ansi);
            Some(Screen::restore(record.cols, record.rows, lines, ansi, end))
        }
        (Some(lines), None) => Some(Screen::restore(record.cols, record.rows, lines, b"", end)),
        (None, _) => None,
    };
    if record.paste && !paste.on() {
        paste.update(b"\x1b[?2004h");
    }
    output.add_tap(paste.clone());
    output.add_tap(marks.clone());
    if let Some(screen) = &screen {
        output.add_tap(screen.clone());
    }
    let meta = SessionMeta {
        command: record.command.clone(),
        args: record.args.clone(),
        cwd: record.cwd.clone(),
        labels: record.labels.clone(),
        idle_timeout: Duration::from_millis(record.idle_timeout_ms),
        integration: record.integration,
        origin: Origin {
            uid: record.uid,
            gid: record.gid,
            class: record.class,
            tie: if record.owned { Tie::Connection } else { Tie::Free },
        },
        cgroup: record.cgroup.clone(),
    };
    let io = live.map(|live| Io { master: live.master, input: Arc::new(live.input) });
    let ended = io.is_none();
    let session = Session {
        id: record.id,
        pid: record.pid,
        meta,
        keep,
        created_at_ms: record.created_at_ms,
        activity_ms: AtomicU64::new(record.activity_ms),
        output_ms: AtomicU64::new(record.output_ms),
        input_mark: AtomicU64::new(record.input_mark),
        leases: AtomicUsize::new(0),
        // A lease crosses as a hold for its client to come back and take again.
        carried_lease_until_ms: AtomicU64::new(if record.leased {
            now_ms() + CARRIED_LEASE.as_millis() as u64
        } else {
            0
        }),
        upgrades: record.upgrades + 1,
        output,
        paste,
        marks,
        screen,
        terminal: Mutex::new(Terminal {
            cols: record.cols,
            rows: record.rows,
            io,
            exit: None,
            reaped: None,
        }),
        exit_tx: watch::channel(None).0,
        end: Mutex::new(record.end),
        end_requested: CancellationToken::new(),
    };
    if record.end.is_some() && !ended {
        session.end_requested.cancel();
    }
    if let Some(status) = record.exit {
        session.finish(status);
    }
    Ok(session)
}
