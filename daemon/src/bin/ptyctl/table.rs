//! Human-readable output of `ls` (a table) and `info` (key: value lines).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipc_proto::{EndReason, ExitStatus, ListReply, SessionInfo, SessionState};
use nix::sys::signal::Signal;

/// The `ls` table and its footer.
pub fn sessions(list: &ListReply, now: SystemTime) -> String {
    let mut rows = vec![
        ["ID", "PID", "STATE", "ENDED", "SIZE", "ATTACHED", "AGE", "COMMAND"].map(String::from)
    ];
    for s in &list.sessions {
        rows.push([
            s.session.to_string(),
            s.pid.to_string(),
            state(s),
            s.end_reason.map_or("-", EndReason::as_str).to_string(),
            format!("{}x{}", s.cols, s.rows),
            s.attached.to_string(),
            age(since(s.created_at_ms, now)),
            command_line(s),
        ]);
    }
    let mut out = align(&rows);
    let _ = write!(out, "{}/{} sessions running", list.active, list.capacity);
    if let Some(started) = list.daemon_started_at_ms {
        let upgrades = match list.upgrades {
            1 => "upgraded once".to_string(),
            n => format!("upgraded {n} times"),
        };
        let _ = write!(out, "; ptyd up {}, {upgrades}", age(since(started, now)));
    }
    out.push('\n');
    out
}

/// `info`: one `key: value` line per field, values aligned.
pub fn details(s: &SessionInfo, now: SystemTime) -> String {
    let labels = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ");
    let idle = match s.idle_timeout_ms {
        0 => "never".to_string(),
        ms => humantime::format_duration(Duration::from_millis(ms)).to_string(),
    };
    let fields = [
        ("id", s.session.to_string()),
        ("pid", s.pid.to_string()),
        ("state", state(s)),
        ("exit", s.exit.as_ref().map_or_else(|| "-".to_string(), ExitStatus::to_string)),
        ("ended by", ended_by(s)),
        ("upgrades", s.upgrades.to_string()),
        ("command", command_line(s)),
        ("cwd", s.cwd.clone().unwrap_or_else(|| "-".to_string())),
        ("size", format!("{}x{}", s.cols, s.rows)),
        ("attached", s.attached.to_string()),
        ("created", timestamp(s.created_at_ms, now)),
        ("last activity", timestamp(s.last_activity_ms, now)),
        ("idle timeout", idle),
        ("output bytes", s.output_offset.to_string()),
        ("labels", if labels.is_empty() { "-".to_string() } else { labels }),
    ];
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (key, value) in fields {
        let _ = writeln!(out, "{:<width$} {value}", format!("{key}:"));
    }
    out
}

/// `running`, `exited(0)`, `exited(SIGKILL)`.
fn state(s: &SessionInfo) -> String {
    match (s.state, s.exit) {
        (SessionState::Running, _) => "running".to_string(),
        (SessionState::Exited, None) => "exited".to_string(),
        (SessionState::Exited, Some(ExitStatus { code: Some(code), .. })) => {
            format!("exited({code})")
        }
        (SessionState::Exited, Some(ExitStatus { signal: Some(sig), .. })) => {
            let name = Signal::try_from(sig)
                .map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_string());
            format!("exited({name})")
        }
        (SessionState::Exited, Some(_)) => "exited(?)".to_string(),
    }
}

/// Why a session ended, with the idle timeout's length when that was it.
fn ended_by(s: &SessionInfo) -> String {
    match s.end_reason {
        None => "-".to_string(),
        Some(EndReason::IdleTimeout) if s.idle_timeout_ms > 0 => {
            let after = humantime::format_duration(Duration::from_millis(s.idle_timeout_ms));
            format!("the idle timeout (after {after})")
        }
        Some(reason) => end_reason(reason).to_string(),
    }
}

/// Why a session ended, in words.
fn end_reason(reason: EndReason) -> &'static str {
    match reason {
        EndReason::Exited => "the program exiting",
        EndReason::Killed => "a kill request",
        EndReason::IdleTimeout => "the idle timeout",
        EndReason::OwnerGone => "its owning connection closing",
        EndReason::ExecTimeout => "the exec timeout",
        EndReason::Shutdown => "the daemon stopping",
        EndReason::MemoryLimit => "its memory limit (the kernel killed it)",
        EndReason::Unknown => "an unknown reason",
    }
}

/// The command and its arguments as one could type them into a shell.
fn command_line(s: &SessionInfo) -> String {
    std::iter::once(&s.command).chain(&s.args).map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

/// Single-quotes a word unless it only holds characters no shell treats specially.
fn quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn since(epoch_ms: u64, now: SystemTime) -> Duration {
    let then = UNIX_EPOCH + Duration::from_millis(epoch_ms);
    // A clock that stepped back makes "then" look like the future: call that 0s.
    now.duration_since(then).unwrap_or_default()
}

/// `2025-01-31T12:00:00Z (5m3s ago)`.
fn timestamp(epoch_ms: u64, now: SystemTime) -> String {
    let then = UNIX_EPOCH + Duration::from_millis(epoch_ms);
    format!("{} ({} ago)", humantime::format_rfc3339_seconds(then), age(since(epoch_ms, now)))
}

/// A short age with at most two units: `42s`, `5m3s`, `2h7m`, `3d4h`.
fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => two_units(s / 60, "m", s % 60, "s"),
        3600..86400 => two_units(s / 3600, "h", s % 3600 / 60, "m"),
        _ => two_units(s / 86400, "d", s % 86400 / 3600, "h"),
    }
}

fn two_units(major: u64, major_unit: &str, minor: u64, minor_unit: &str) -> String {
    if minor == 0 {
        format!("{major}{major_unit}")
    } else {
        format!("{major}{major_unit}{minor}{minor_unit}")
    }
}

/// Left-aligned columns two spaces apart; the last column is not padded.
fn align<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                let _ = write!(line, "{cell}{:pad$}  ", "");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(age(Duration::from_secs(0)), "0s");
        assert_eq!(age(Duration::from_secs(59)), "59s");
        assert_eq!(age(Duration::from_secs(60)), "1m");
        assert_eq!(age(Duration::from_secs(303)), "5m3s");
        assert_eq!(age(Duration::from_secs(2 * 3600 + 7 * 60 + 5)), "2h7m");
        assert_eq!(age(Duration::from_secs(3 * 86400 + 4 * 3600)), "3d4h");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("ls"), "ls");
        assert_eq!(quote("/bin/sh"), "/bin/sh");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn table() {
        let rows = [["A", "BB"].map(String::from), ["ccc", "d"].map(String::from)];
        assert_eq!(align(&rows), "A    BB\nccc  d\n");
    }
}
