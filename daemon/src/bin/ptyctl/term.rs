//! The local terminal: raw mode (always restored), window size, and the signals ptyctl handles.

use std::io::{self, IsTerminal};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::{Mutex, Once};

use nix::libc;
use nix::sys::termios::{self, SetArg, Termios};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::cli::Size;

/// The settings to put back, shared with the panic hook: a panic prints its message and may
/// abort before any `Drop` runs, and a terminal left raw is unusable.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);
static HOOK: Once = Once::new();

/// Stdin in raw mode for as long as this lives.
pub struct RawMode(());

impl RawMode {
    /// Puts stdin (which must be a terminal) in raw mode.
    pub fn enable() -> io::Result<RawMode> {
        let stdin = io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        *lock_saved() = Some(saved);
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        let guard = RawMode(());
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)?;
        Ok(guard)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

fn lock_saved() -> std::sync::MutexGuard<'static, Option<Termios>> {
    // A poisoned lock still holds valid settings; restoring them matters more.
    SAVED.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a program in the session may have turned on in the local terminal, turned off:
/// mouse reporting (all modes and encodings), focus events, bracketed paste, application
/// cursor keys and keypad, a hidden cursor, attributes, and the alternate screen (left
/// last, so the user's own screen comes back).
const RESET_MODES: &[u8] = b"\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1005l\x1b[?1006l\x1b[?1015l\
\x1b[?1004l\x1b[?2004l\x1b[?1l\x1b>\x1b[?25h\x1b[0 q\x1b[m\x1b[?1049l";

/// Puts back the settings saved by [`RawMode::enable`], once, and leaves the terminal's
/// modes as a shell expects them, whatever the session's program had set.
fn restore() {
    if let Some(saved) = lock_saved().take() {
        if io::stdout().is_terminal() {
            // Straight to the descriptor: the panic hook runs this too, and another thread
            // may hold stdout's lock then.
            let _ = nix::unistd::write(io::stdout(), RESET_MODES);
        }
        // TCSADRAIN lets output already written reach the screen under the raw settings.
        let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSADRAIN, &saved);
    }
}

/// Whether stdin is a terminal.
pub fn stdin_is_tty() -> bool {
    io::stdin().is_terminal()
}

/// The size of the terminal on stdin, if it is one and reports a nonzero size.
pub fn stdin_size() -> Option<Size> {
    window_size(io::stdin().as_fd())
}

/// The size of the terminal on stdout, if it is one and reports a nonzero size.
pub fn stdout_size() -> Option<Size> {
    window_size(io::stdout().as_fd())
}

#[allow(unsafe_code)]
fn window_size(fd: BorrowedFd<'_>) -> Option<Size> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` through the pointer, which points to a
    // live, aligned local of that type; `fd` is borrowed, so it stays open during the call.
    // nix 0.29 has no safe wrapper for this request.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0 && ws.ws_row > 0).then_some(Size { cols: ws.ws_col, rows: ws.ws_row })
}

/// SIGINT, SIGTERM and SIGHUP, caught so that ptyctl can restore the terminal and tell the
/// daemon before it goes (their default action would kill it on the spot).
pub struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    pub fn install() -> io::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The number of the next signal received.
    pub async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.int.recv() => libc::SIGINT,
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.hup.recv() => libc::SIGHUP,
        }
    }
}

/// A stream of SIGWINCH deliveries.
pub fn window_changes() -> io::Result<Signal> {
    signal(SignalKind::window_change())
}
