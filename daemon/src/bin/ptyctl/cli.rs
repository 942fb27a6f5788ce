//! The command line: clap definitions, help texts and the parsers for flag values.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit status, the same for every subcommand:
  0      success
  2      usage error: an unknown flag, a malformed value, or a request the daemon found
         malformed (invalid regex, --since past the end of the output, ambiguous id prefix)
  3      the session had exited, or exited before what was waited for happened
  4      no such session (an unknown id, or a prefix of none)
  5      refused: pool at capacity or quota reached, peer not allowed, daemon shutting
         down, no shell integration (run), the shell busy (run)
  124    --timeout expired
  125    ptyctl or the daemon failed otherwise (cannot connect, spawn failed, internal)
  N      exec, run, wait and attach exit with the session's own code (128+N for signal
         N; attach: 0 after a detach); for them every failure above but 2 and 124 is 125
  1      doctor: a check failed";

/// Whether a command exits with its session's own code, which decides its exit status
/// on error (see `EXIT_CODES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `exec`, `run`, `wait`, `attach`.
    PassesSessionCode,
    /// Every other command.
    Reports,
}

impl Kind {
    /// The kind of `command`.
    pub fn of(command: &Command) -> Kind {
        match command {
            Command::Exec { .. }
            | Command::Run { .. }
            | Command::Wait { .. }
            | Command::Attach { .. } => Kind::PassesSessionCode,
            _ => Kind::Reports,
        }
    }
}

/// Control the sessions of ptyd, the PTY session daemon.
#[derive(Parser, Debug)]
#[command(
    name = "ptyctl",
    version,
    long_about = "Control the sessions of ptyd, the PTY session daemon.\n\n\
        Each session is a command running in its own pseudo-terminal inside the daemon. \
        Sessions outlive ptyctl: spawn one, attach to it, detach, and attach again later.",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// Path of ptyd's Unix socket [default: $XDG_RUNTIME_DIR/ptyd/ptyd.sock, or
    /// /tmp/ptyd-$UID/ptyd.sock without XDG_RUNTIME_DIR]
    #[arg(long, global = true, env = "PTYD_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List sessions, running and recently exited
    Ls {
        /// Print the daemon's list reply as JSON
        #[arg(long)]
        json: bool,
    },

    /// Start a command in a new session and print its id
    #[command(long_about = "Start a command in a new session and print its id.\n\n\
            Only the id and a newline go to stdout, so `id=$(ptyctl spawn -- bash)` works. \
            The command is executed directly, not through a shell.")]
    Spawn {
        #[command(flatten)]
        opts: SpawnOpts,

        /// Kill the session after this long without input, output or an attached
        /// client (e.g. 30s, 10m, 2h; 0 means never) [default: the daemon's]
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        idle_timeout: Option<Duration>,

        /// Bytes of output the session keeps for replay on attach [default: the daemon's]
        #[arg(long, value_name = "N")]
        replay_bytes: Option<usize>,

        /// A person's terminal, not an agent's: it may use the slots the daemon reserves for
        /// interactive sessions (ptyd --interactive-reserve)
        #[arg(long)]
        interactive: bool,

        /// The command and its arguments (put `--` before them if they start with `-`)
        #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
        command: Vec<String>,
    },

    /// Connect this terminal to a session (detach with Ctrl-])
    #[command(
        long_about = "Connect this terminal to a session.\n\n\
            When stdin is a terminal it is put in raw mode, the session is resized to it and \
            follows its size, its screen is painted (unless --since is still in the replay \
            window, which replays those bytes), keystrokes go to the session and its output \
            comes to stdout. The detach key leaves the session running and exits 0. However \
            ptyctl ends (detach, exit, a lost connection, a signal), the terminal is put back \
            as a shell expects it: main screen, cursor shown, mouse and focus reporting, \
            bracketed paste, application cursor keys and keypad off, attributes reset. When \
            the session exits, ptyctl exits with its exit code (128+N for signal N).\n\n\
            When stdin is not a terminal, it is forwarded until end of file (no detach key), \
            then output keeps streaming until the session exits.",
        after_help = "Exit status: the session's exit code (128+N for signal N); 0 after a detach; \
            125 when ptyctl or the daemon failed; 128+N when signal N made ptyctl detach."
    )]
    Attach {
        /// Session id, or a unique prefix of one
        id: String,

        /// Replay output from this absolute byte offset instead of the whole replay window
        #[arg(long, value_name = "OFFSET")]
        since: Option<u64>,

        /// Key that detaches: `ctrl-X` for a letter or one of @ [ \ ] ^ _, or `none`
        #[arg(long, value_name = "KEY", default_value = "ctrl-]", value_parser = parse_detach_key)]
        detach_key: DetachKey,
    },

    /// Type text into a session
    Send {
        /// Session id, or a unique prefix of one
        id: String,

        /// Text to write, byte for byte (no escape processing)
        #[arg(required_unless_present = "stdin", conflicts_with = "stdin")]
        text: Option<String>,

        /// Append a carriage return (what the Enter key sends)
        #[arg(long)]
        enter: bool,

        /// Send the bytes read from stdin, until end of file, instead of TEXT
        #[arg(long)]
        stdin: bool,
    },

    /// Change a session's terminal size
    Resize {
        /// Session id, or a unique prefix of one
        id: String,

        /// New size as COLSxROWS, e.g. 120x40
        #[arg(value_parser = parse_size)]
        size: Size,
    },

    /// End a session, or send one signal to it
    Kill {
        /// Session id, or a unique prefix of one
        id: String,

        /// Deliver only this signal to the session's process group (e.g. INT, SIGTERM, 9)
        /// instead of ending the session (SIGHUP, then SIGKILL after a grace period)
        #[arg(long, value_name = "SIGNAL")]
        signal: Option<String>,
    },

    /// Wait for a session to exit and exit with its code
    #[command(
        long_about = "Wait for a session to exit and exit with its code.\n\n\
            Prints nothing unless --json is given.",
        after_help = "Exit status: the session's exit code (128+N for signal N); 124 when \
            --timeout expired; 125 when ptyctl or the daemon failed."
    )]
    Wait {
        /// Session id, or a unique prefix of one
        id: String,

        /// Give up after this long (e.g. 500ms, 10s, 5m) [default: wait for ever]
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,

        /// Print the exit status as JSON: {"code", "signal", "end_reason"} (why it ended:
        /// exited, killed, idle_timeout, owner_gone, exec_timeout, shutdown, memory_limit)
        #[arg(long)]
        json: bool,
    },

    /// Show one session's details
    Info {
        /// Session id, or a unique prefix of one
        id: String,

        /// Print the daemon's reply as JSON
        #[arg(long)]
        json: bool,
    },

    /// Run a command in a new session, stream its output and exit with its code
    #[command(
        long_about = "Run a command in a new session, stream its output and exit with its code, \
            like `ssh host cmd`.\n\n\
            The output is written to stdout byte for byte as it comes. When stdin is a terminal \
            it is put in raw mode and forwarded to the session, whose size follows the local \
            terminal; there is no detach key. When stdin is not a terminal it is not read, and \
            SIGINT (Ctrl-C) is forwarded to the session as INT. SIGTERM or SIGHUP end the \
            session and ptyctl.\n\n\
            Without --size, the size is the local terminal's (stdin, else stdout; 80x24 when \
            neither is one) and follows it when stdin is a terminal. When stdin is a \
            terminal, TERM is passed on unless --env sets it.\n\n\
            With --json, the daemon runs the command to completion (stdin is not read, the \
            size is 80x24 unless --size says otherwise) and ptyctl prints one JSON object: \
            session, exit_code, signal, timed_out, output (the kept output as text, invalid \
            UTF-8 replaced), truncated, total_bytes and duration_ms.",
        after_help = "Exit status: the command's exit code (128+N for signal N); 124 when \
            --timeout expired (the session was ended); 125 when ptyctl or the daemon failed \
            (cannot connect, spawn failed, pool at capacity...); 128+N when signal N (TERM, \
            HUP) ended ptyctl."
    )]
    Exec {
        #[command(flatten)]
        opts: SpawnOpts,

        /// Run to completion, then print the status and the output as one JSON object
        // The daemon's exec has no labels: it marks its sessions `ptyd.exec=1` itself.
        #[arg(long, conflicts_with = "labels")]
        json: bool,

        /// End the session after this long and exit 124 (e.g. 500ms, 10s, 5m)
        /// [default: no limit]
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,

        /// With --json: keep only the last BYTES of output [default and maximum: 960 KiB]
        #[arg(long, value_name = "BYTES", requires = "json")]
        max_output: Option<usize>,

        /// Print the output as text: escape sequences (colours, cursor moves, titles)
        /// removed, CRLF as LF
        #[arg(long)]
        plain: bool,

        /// The command and its arguments (put `--` before them if they start with `-`)
        #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
        command: Vec<String>,
    },

    /// Wait until a session prints text that matches a regular expression
    #[command(
        long_about = "Wait until a session prints text that matches a regular expression, \
            then print the matched text.\n\n\
            The regex (Rust regex syntax) is matched against the raw output bytes, escape \
            sequences included. Without --since the search starts at the session's latest input \
            (`input` or `submit`; the start of the output before any input), so `spawn` then \
            `wait-for PROMPT`, or `submit` then `wait-for RESULT`, cannot miss an answer \
            printed before the call. With --json the reply's `end` is the offset to resume from. \
            Put `--` before a regex that starts with `-`.",
        after_help = "Exit status: 0 on a match; 2 when the regex is invalid or --since is \
            past the end of the output; 3 when the session exited before a match; 4 when there \
            is no such session; 124 when --timeout expired; 125 when ptyctl or the daemon \
            failed."
    )]
    WaitFor {
        /// Session id, or a unique prefix of one
        id: String,

        /// Regular expression to look for, e.g. '\$ $' or 'listening on port (\d+)'
        regex: String,

        /// Search output from this absolute byte offset on [default: the latest input's offset]
        #[arg(long, value_name = "OFFSET", conflicts_with = "screen")]
        since: Option<u64>,

        /// Match the text the screen shows (rows joined by newlines), now and after every
        /// output, instead of the output bytes: for programs that redraw in place (top,
        /// vim, progress bars), whose bytes never spell the text out
        #[arg(long)]
        screen: bool,

        /// Give up after this long (e.g. 500ms, 10s, 5m) [default: wait for ever]
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,

        /// Print the match as JSON: offset, end, text, capture groups, dropped bytes
        #[arg(long)]
        json: bool,

        /// Print the output as text: escape sequences (colours, cursor moves, titles)
        /// removed, CRLF as LF
        #[arg(long)]
        plain: bool,
    },

    /// Wait until a session has printed nothing for a while
    #[command(
        long_about = "Wait until a session has printed nothing for DURATION: a program done \
            drawing, a prompt waiting for input.\n\n\
            Silence that began before the call counts. Prints nothing unless --json is given.",
        after_help = "Exit status: 0 once quiet; 3 when the session exited first; 4 when there \
            is no such session; 124 when --timeout expired; 125 when ptyctl or the daemon \
            failed."
    )]
    WaitQuiet {
        /// Session id, or a unique prefix of one
        id: String,

        /// The silence that counts as quiet (e.g. 300ms, 2s; at least 1ms)
        #[arg(value_name = "DURATION", value_parser = parse_quiet)]
        duration: Duration,

        /// Give up after this long (e.g. 500ms, 10s, 5m) [default: wait for ever]
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,

        /// Print the output offset at which the session went quiet, as JSON
        #[arg(long)]
        json: bool,
    },

    /// Run a command in a session's live shell and exit with its code
    #[command(
        long_about = "Run a command in a session's live shell and exit with its code.\n\n\
            The words are joined with spaces and typed into the shell as one command line (as \
            a paste when the shell has bracketed paste on, so several lines stay one input); \
            ptyctl waits until the shell says the command has finished, prints its output (the \
            shell's echo of the command line left out) and exits with its exit code. The shell \
            keeps its working directory, variables and history, unlike `exec`, which starts a \
            new session.\n\n\
            It needs the shell's semantic prompt marks (OSC 133): ptyd adds them to the \
            interactive bash and zsh it starts, after the user's own startup files. Other \
            sessions are refused (use `submit --wait-for`), and so is a shell that is running \
            a command already.\n\n\
            With --timeout the command is interrupted (Ctrl-C) when the time is up. With \
            --json, ptyctl prints one JSON object: session, exit_code, signal (always null), \
            timed_out, output (as text, invalid UTF-8 replaced), truncated, total_bytes and \
            duration_ms.",
        after_help = "Exit status: the command's exit code; 124 when --timeout expired (the \
            command was interrupted); 125 when ptyctl or the daemon failed (unknown id, no \
            prompt marks, the shell is busy, cannot connect...)."
    )]
    Run {
        /// Session id, or a unique prefix of one
        id: String,

        /// Interrupt the command (Ctrl-C) after this long and exit 124 (e.g. 500ms, 10s)
        /// [default: no limit]
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,

        /// Print the result as one JSON object
        #[arg(long)]
        json: bool,

        /// Keep only the last BYTES of output [default and maximum: 960 KiB]
        #[arg(long, value_name = "BYTES")]
        max_output: Option<usize>,

        /// Print the output as text: escape sequences (colours, cursor moves, titles)
        /// removed, CRLF as LF
        #[arg(long)]
        plain: bool,

        /// The command line (put `--` before it if it starts with `-`)
        #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
        command: Vec<String>,
    },

    /// Type text into a session and press Enter, as one submitted input
    #[command(
        long_about = "Type text into a session and press Enter, as one submitted input.\n\n\
            When the program has bracketed paste on (shells, editors, REPLs), the text is sent \
            as a paste, so several lines stay one input; Enter follows as a write of its own. \
            Unlike `send`, the text must be UTF-8. Prints nothing unless --json is given.\n\n\
            With --wait-for REGEX it then waits, like `wait-for`, for the answer: output from \
            the moment the text was typed that matches, and prints it.",
        after_help = "Exit status: 0 when submitted (and, with --wait-for, matched); 2 when the \
            regex is invalid (nothing is typed); 3 when the session exited first; 4 when there \
            is no such session; 124 when --timeout expired; 125 when ptyctl or the daemon \
            failed."
    )]
    Submit {
        /// Session id, or a unique prefix of one
        id: String,

        /// The text, which may span lines (no escape processing)
        #[arg(required_unless_present = "stdin", conflicts_with = "stdin")]
        text: Option<String>,

        /// Read the text from stdin until end of file; one trailing newline is dropped,
        /// since Enter is pressed anyway
        #[arg(long)]
        stdin: bool,

        /// Then wait for output matching this regex, from the moment the text was typed
        #[arg(long, value_name = "REGEX")]
        wait_for: Option<String>,

        /// With --wait-for, give up after this long (e.g. 10s) [default: wait forever]
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, requires = "wait_for")]
        timeout: Option<Duration>,

        /// Print the reply as JSON: {"bracketed_paste": BOOL, "offset": N}, or with
        /// --wait-for the match as `wait-for --json` prints it
        #[arg(long)]
        json: bool,
    },

    /// Print a session's output without attaching
    #[command(long_about = "Print a session's output without attaching.\n\n\
            The raw bytes go to stdout and `[next offset: N]` to stderr, so that \
            `ptyctl read ID --since N > out` works and N can be passed to the next read (or to \
            wait-for). Without --since, the read starts at the oldest byte the daemon still \
            holds. When bytes after --since are no longer held, a notice on stderr says how \
            many.")]
    Read {
        /// Session id, or a unique prefix of one
        id: String,

        /// Start at this absolute byte offset [default: the oldest byte held]
        #[arg(long, value_name = "OFFSET")]
        since: Option<u64>,

        /// Return at most this many bytes [default: everything held]
        #[arg(long, value_name = "BYTES")]
        max: Option<usize>,

        /// Print {offset, next, dropped, end, output} as JSON (output as text, invalid
        /// UTF-8 replaced) and nothing on stderr
        #[arg(long)]
        json: bool,

        /// Print the output as text: escape sequences (colours, cursor moves, titles)
        /// removed, CRLF as LF
        #[arg(long)]
        plain: bool,
    },

    /// Print what a session's terminal shows, like `tmux capture-pane -p`
    #[command(long_about = "Print what a session's terminal shows, like `tmux capture-pane -p`: \
            one line per row of the screen (trailing blanks trimmed), after up to \
            --scrollback lines of history. Full-screen programs (top, vim, less) are shown as \
            drawn, whatever escape sequences drew them.\n\n\
            --ansi prints bytes that repaint the screen on a terminal of the session's size \
            (colours, cursor, modes, title) instead; --json prints {lines, scrollback_lines, \
            cursor_row, cursor_col, cursor_visible, title, buffer, cols, rows, offset}, where \
            offset is the output offset the screen reflects (for read or wait-for --since).")]
    Screen {
        /// Session id, or a unique prefix of one
        id: String,

        /// Lines of history to print before the screen (at most what the daemon keeps)
        #[arg(long, value_name = "N", default_value_t = 0)]
        scrollback: u32,

        /// Print bytes that repaint the screen instead of text
        #[arg(long, conflicts_with = "json")]
        ansi: bool,

        /// Print the lines and the screen's state as JSON
        #[arg(long)]
        json: bool,
    },

    /// Print the daemon's session events as they happen, until interrupted
    #[command(long_about = "Print the daemon's session events as they happen, one line each, \
            until interrupted (Ctrl-C, SIGTERM or SIGHUP exit 0).\n\n\
            A line is `TIME EVENT ID DETAILS`: spawned (pid and command), exited (code or \
            signal, and reason=exited|killed|idle_timeout|owner_gone|exec_timeout|shutdown|memory_limit), idle_killed (an exited line follows), resized (COLSxROWS). \
            `[missed N events]` means ptyctl read too slowly. Each line is flushed at once, so \
            the output can be piped.")]
    Events {
        /// One JSON object per line: the daemon's event as sent, or
        /// {"type":"events_dropped","count":N}
        #[arg(long)]
        json: bool,
    },

    /// Replace the running ptyd with a new binary, keeping every session
    #[command(
        long_about = "Replace the running ptyd with a new binary without ending any \
            session: the daemon execs the binary in place (same pid, so the programs stay \
            its children), carrying its listening socket, every PTY and every session's \
            output, screen and state. Clients are disconnected and reconnect; new \
            connections wait until the new binary serves.\n\n\
            The binary is checked first (it must be a ptyd that loads this daemon's state); \
            if anything fails, ptyd goes on with its old binary and every session, and this \
            command says why.",
        after_help = "Exit status: 0 when the new binary serves; 125 when the upgrade \
            failed (ptyd runs on, on its old binary)."
    )]
    Upgrade {
        /// The binary to run [default: the one ptyd was started from, read anew from disk]
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,

        /// Print the daemon's answer as JSON: {from_version, to_version, binary, pid,
        /// sessions, upgrades, duration_ms}
        #[arg(long)]
        json: bool,
    },

    /// Check the socket, the daemon and its limits; print one line per check
    #[command(
        long_about = "Check the socket, the daemon and its limits, and print one line \
            per check, marked ok, warn or FAIL, then a summary.\n\n\
            Checks: the socket file, its mode and owner and its directory's; that the daemon \
            answers the handshake, and its version and pid; pool usage; the daemon's \
            open-file limit against its capacity; pseudo-terminals in use system-wide; zombie \
            children of the daemon.",
        after_help = "Exit status: 0 when no check failed (warnings allowed); 1 otherwise."
    )]
    Doctor {
        /// Print one JSON object instead: {"socket", "checks": [{"check", "status" (ok,
        /// warn or fail), "message", "hints"}], "summary": {"ok", "warn", "fail"}}
        #[arg(long)]
        json: bool,
    },

    /// Print a completion script for a shell
    #[command(long_about = "Print a completion script for a shell, generated from ptyctl's \
        own definition of its commands and flags.\n\n\
        bash:  ptyctl completions bash > /usr/share/bash-completion/completions/ptyctl\n\
        zsh:   ptyctl completions zsh > /usr/share/zsh/vendor-completions/_ptyctl\n\
        fish:  ptyctl completions fish > /usr/share/fish/vendor_completions.d/ptyctl.fish")]
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },

    /// Print ptyctl's man page (roff), generated from its help
    #[command(long_about = "Print ptyctl's man page (roff), generated from its help texts: \
        `ptyctl man > /usr/share/man/man1/ptyctl.1`, then `man ptyctl`.")]
    Man,
}

/// Flags shared by `spawn` and `exec`.
#[derive(Args, Debug)]
pub struct SpawnOpts {
    /// Working directory of the command (relative to ptyctl's) [default: ptyctl's own, as
    /// tmux new-session starts in the client's]
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,

    /// Set an environment variable on top of the daemon's environment (repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,

    /// Pass ptyctl's own environment to the command (on top of the daemon's; --env wins;
    /// systemd's hand-over variables are left out)
    #[arg(long)]
    pub env_inherit: bool,

    /// Terminal size as COLSxROWS, e.g. 120x40 [default: spawn 80x24, exec the local terminal's]
    #[arg(long, value_name = "COLSxROWS", value_parser = parse_size)]
    pub size: Option<Size>,

    /// Add a label to the session, shown by `ls --json` and `info` (repeatable)
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
}

/// A terminal size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    pub cols: u16,
    pub rows: u16,
}

/// The byte that detaches `attach`, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetachKey(pub Option<u8>);

/// `COLSxROWS`, both in 1..=65535.
pub fn parse_size(s: &str) -> Result<Size, String> {
    let bad = |why: &str| format!("expected COLSxROWS such as 120x40 ({why})");
    let (cols, rows) =
        s.split_once(['x', 'X']).ok_or_else(|| bad("no 'x' between columns and rows"))?;
    let num = |part: &str, what: &str| -> Result<u16, String> {
        let n: u16 = part
            .trim()
            .parse()
            .map_err(|_| bad(&format!("{what} must be a number from 1 to 65535")))?;
        if n == 0 {
            return Err(bad(&format!("{what} must not be 0")));
        }
        Ok(n)
    };
    Ok(Size { cols: num(cols, "columns")?, rows: num(rows, "rows")? })
}

/// A duration of at least 1 ms: the daemon counts silence in whole milliseconds.
pub fn parse_quiet(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(1) {
        return Err("must be at least 1ms".to_string());
    }
    Ok(d)
}

/// `KEY=VALUE`; the value may be empty and may contain '='.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        Some(_) => Err("the key before '=' is empty".to_string()),
        None => Err("expected KEY=VALUE".to_string()),
    }
}

/// `ctrl-X` (case-insensitive; X a letter or one of @ [ \ ] ^ _) or `none`.
pub fn parse_detach_key(s: &str) -> Result<DetachKey, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(DetachKey(None));
    }
    let bad = || "expected ctrl-X (X a letter or one of @ [ \\ ] ^ _) or none".to_string();
    let prefix = s.get(..5).filter(|p| p.eq_ignore_ascii_case("ctrl-")).ok_or_else(bad)?;
    match &s.as_bytes()[prefix.len()..] {
        // Ctrl clears bit 6 of the uppercase key: A=0x41 -> 0x01, ]=0x5d -> 0x1d.
        [c] if (b'@'..=b'_').contains(&c.to_ascii_uppercase()) => {
            Ok(DetachKey(Some(c.to_ascii_uppercase() ^ 0x40)))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("120x40"), Ok(Size { cols: 120, rows: 40 }));
        assert_eq!(parse_size("80X24"), Ok(Size { cols: 80, rows: 24 }));
        for bad in ["", "120", "x40", "120x", "0x40", "120x0", "70000x10", "-1x5", "axb"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_values() {
        assert_eq!(parse_key_value("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_key_value("A="), Ok(("A".into(), String::new())));
        assert!(parse_key_value("=x").is_err());
        assert!(parse_key_value("A").is_err());
    }

    #[test]
    fn detach_keys() {
        assert_eq!(parse_detach_key("ctrl-]"), Ok(DetachKey(Some(0x1d))));
        assert_eq!(parse_detach_key("Ctrl-A"), Ok(DetachKey(Some(0x01))));
        assert_eq!(parse_detach_key("ctrl-q"), Ok(DetachKey(Some(0x11))));
        assert_eq!(parse_detach_key("ctrl-@"), Ok(DetachKey(Some(0x00))));
        assert_eq!(parse_detach_key("NONE"), Ok(DetachKey(None)));
        for bad in ["", "ctrl-", "ctrl-ab", "ctrl-1", "alt-a", "é", "ctrlé"] {
            assert!(parse_detach_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quiet_durations() {
        assert_eq!(parse_quiet("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_quiet("2s"), Ok(Duration::from_secs(2)));
        for bad in ["", "0s", "500us", "soon"] {
            assert!(parse_quiet(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exec_flags() {
        use clap::Parser as _;
        let parse = |args: &[&str]| Cli::try_parse_from(["ptyctl", "exec"].iter().chain(args));
        assert!(parse(&["--json", "--max-output", "10", "--", "seq", "9"]).is_ok());
        // --max-output only makes sense for the collected output of --json.
        assert!(parse(&["--max-output", "10", "--", "seq", "9"]).is_err());
        assert!(parse(&["--json", "--label", "a=b", "--", "true"]).is_err());
        assert!(parse(&["--timeout", "1s", "--", "true"]).is_ok());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
