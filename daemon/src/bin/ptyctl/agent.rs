//! The commands made for scripts and agents: `exec --json`, `run`, `wait-for`, `submit`,
//! `read` and `events`, and their plain and JSON outputs.

use std::io::{self, Write as _};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{anyhow, Context as _, Result};
use bytes::{Bytes, BytesMut};
use ipc_proto::{
    Client, DaemonEvent, DaemonEventKind, ExecRequest, ExecResult, ExitStatus, MatchReply, Notice,
    ReadReply, RunRequest, ScreenReply, SessionId, SpawnRequest,
};
use serde::Serialize;

use crate::plain::Render;
use crate::stdio;
use crate::term::Signals;

/// What `exec --json` prints.
#[derive(Serialize, Debug)]
struct ExecOutput {
    session: SessionId,
    exit_code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    /// The kept output; JSON strings cannot hold arbitrary bytes, so invalid UTF-8 is
    /// replaced (`read` gives the raw bytes of the retained session).
    output: String,
    truncated: bool,
    total_bytes: u64,
    duration_ms: u64,
}

impl ExecOutput {
    /// What `exec --json` and `run --json` print of `result` and its kept `output`.
    fn of(result: &ExecResult, output: &[u8]) -> ExecOutput {
        ExecOutput {
            session: result.session,
            exit_code: result.code,
            signal: result.signal,
            timed_out: result.timed_out,
            output: String::from_utf8_lossy(output).into_owned(),
            truncated: result.truncated,
            total_bytes: result.total_bytes,
            duration_ms: result.duration_ms,
        }
    }
}

/// `exec --json`: the daemon runs the command to completion; prints one JSON object and
/// returns the command's shell code, or 124 when the timeout ended it.
pub async fn exec_json(
    client: &Client,
    req: SpawnRequest,
    timeout: Option<Duration>,
    max_output: Option<usize>,
    mut render: Render,
) -> Result<i32> {
    let req = ExecRequest {
        command: req.command,
        args: req.args,
        env: req.env,
        cwd: req.cwd,
        cols: req.cols,
        rows: req.rows,
        timeout_ms: timeout.map(crate::millis),
        max_output,
    };
    // No timer of ptyctl's own: the daemon's timeout ends the command, and ending ptyctl
    // (Ctrl-C) closes the connection, which ends the session too.
    let (result, data) = client.exec(req).await?;
    let output = ExecOutput::of(&result, &render.render(&data));
    println!("{}", serde_json::to_string_pretty(&output)?);
    if result.timed_out {
        // The status is that of the kill, not the command's own.
        return Ok(crate::EXIT_TIMEOUT);
    }
    Ok(ExitStatus { code: result.code, signal: result.signal }.shell_code())
}

/// `run`: types the command into the session's shell and waits for it; prints its output
/// (or, with `json`, one JSON object) and returns its exit code, or 124 when the timeout
/// interrupted it.
pub async fn run(client: &Client, req: RunRequest, json: bool, mut render: Render) -> Result<i32> {
    let (result, data) = client.run(req).await?;
    let data = render.render(&data);
    if json {
        println!("{}", serde_json::to_string_pretty(&ExecOutput::of(&result, &data))?);
    } else {
        let mut stdout = io::stdout().lock();
        stdout.write_all(&data)?;
        stdout.flush()?;
    }
    if result.timed_out {
        return Ok(crate::EXIT_TIMEOUT);
    }
    // No status means the shell ended without saying (killed): report a failure.
    Ok(result.code.unwrap_or(crate::EXIT_FAILED))
}

/// `wait-for`: the matched text, or the whole reply as JSON.
pub fn print_match(reply: &MatchReply, json: bool, mut render: Render) -> Result<()> {
    let reply = &MatchReply { text: render.render_text(&reply.text), ..reply.clone() };
    if json {
        println!("{}", serde_json::to_string_pretty(reply)?);
        return Ok(());
    }
    if reply.dropped > 0 {
        eprintln!("[ptyctl: {} bytes were no longer held and not searched]", reply.dropped);
    }
    // One line for the shell; a match that ends a line already is one.
    if reply.text.ends_with('\n') {
        print!("{}", reply.text);
    } else {
        println!("{}", reply.text);
    }
    Ok(())
}

/// `submit --stdin`: all of stdin as text, minus one trailing newline (submit presses
/// Enter itself; `echo cmd | ptyctl submit --stdin` would otherwise enter twice).
pub async fn stdin_text() -> Result<String> {
    let mut chunks = stdio::stdin_chunks();
    let mut all = BytesMut::new();
    while let Some(chunk) = chunks.recv().await {
        all.extend_from_slice(&chunk.context("cannot read stdin")?);
    }
    let mut text =
        String::from_utf8(all.to_vec()).map_err(|_| anyhow!("stdin is not valid UTF-8"))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// What `read --json` prints.
#[derive(Serialize, Debug)]
struct ReadOutput {
    offset: u64,
    next: u64,
    dropped: u64,
    end: u64,
    output: String,
}

/// `read`: the raw bytes on stdout and the next offset on stderr, or one JSON object.
pub fn print_read(reply: &ReadReply, data: &Bytes, json: bool, mut render: Render) -> Result<()> {
    let data = &render.render(data);
    if json {
        let output = ReadOutput {
            offset: reply.offset,
            next: reply.next,
            dropped: reply.dropped,
            end: reply.end,
            output: String::from_utf8_lossy(data).into_owned(),
        };
        println!("{}", serde_json::to_string_pretty(&output)?);
        return Ok(());
    }
    let mut out = io::stdout().lock();
    out.write_all(data).and_then(|()| out.flush()).context("cannot write to stdout")?;
    if reply.dropped > 0 {
        eprintln!("[ptyctl: {} bytes were no longer held]", reply.dropped);
    }
    eprintln!("[next offset: {}]", reply.next);
    Ok(())
}

/// `screen`: the rows as text, the repainting bytes (`ansi`), or everything as JSON.
pub fn print_screen(reply: &ScreenReply, data: &Bytes, ansi: bool, json: bool) -> Result<()> {
    let mut out = io::stdout().lock();
    if json {
        let text = serde_json::to_string_pretty(reply)?;
        writeln!(out, "{text}").context("cannot write to stdout")?;
    } else if ansi {
        out.write_all(data).context("cannot write to stdout")?;
    } else {
        for line in &reply.lines {
            writeln!(out, "{line}").context("cannot write to stdout")?;
        }
    }
    out.flush().context("cannot write to stdout")
}

/// `events`: one line per notice until a signal (exit 0) or the connection ends (error).
pub async fn events(client: &Client, json: bool) -> Result<i32> {
    let mut signals = Signals::install().context("cannot handle signals")?;
    let mut notices = client.subscribe().await?;
    loop {
        let notice = tokio::select! {
            notice = notices.recv() => notice,
            _ = signals.recv() => return Ok(0),
        };
        let Some(notice) = notice else {
            return Err(anyhow!("lost the connection to ptyd"));
        };
        let mut line = if json { notice_json(&notice)? } else { notice_line(&notice) };
        line.push('\n');
        // Written off the runtime and raced with the signals: a stalled pipe must not
        // make ptyctl deaf to Ctrl-C.
        let written = tokio::select! {
            written = stdio::write_stdout(Bytes::from(line)) => written,
            _ = signals.recv() => return Ok(0),
        };
        match written.unwrap_or_else(|e| Err(io::Error::other(e))) {
            Ok(()) => {}
            // The reader went away (`ptyctl events | head -3`): a normal end for a watcher.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(0),
            Err(e) => return Err(e).context("cannot write to stdout"),
        }
    }
}

/// `2026-11-22T22:50:01.123Z spawned <id> pid=123 bash`, `… exited <id> code=0`,
/// `[missed 3 events]`.
fn notice_line(notice: &Notice) -> String {
    let ev = match notice {
        Notice::Event(ev) => ev,
        Notice::Dropped(count) => return format!("[missed {count} events]"),
    };
    let at = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ev.at_ms));
    let mut line = format!("{at} {} {}", kind_name(ev.event), ev.session);
    let detail = match ev.event {
        DaemonEventKind::Spawned => {
            let pid = ev.pid.map_or_else(|| "?".to_string(), |p| p.to_string());
            format!("pid={pid} {}", ev.command.as_deref().unwrap_or("?"))
        }
        DaemonEventKind::Exited => {
            let status = match ev.exit {
                Some(ExitStatus { code: Some(code), .. }) => format!("code={code}"),
                Some(ExitStatus { signal: Some(sig), .. }) => format!("signal={sig}"),
                _ => String::new(),
            };
            match ev.end_reason {
                Some(reason) => format!("{status} reason={}", reason.as_str()),
                None => status,
            }
        }
        DaemonEventKind::Resized => match (ev.cols, ev.rows) {
            (Some(cols), Some(rows)) => format!("{cols}x{rows}"),
            _ => String::new(),
        },
        DaemonEventKind::IdleKilled | DaemonEventKind::Unknown => String::new(),
    };
    if !detail.is_empty() {
        line.push(' ');
        line.push_str(&detail);
    }
    line
}

/// The event's wire name, as in the JSON form.
fn kind_name(kind: DaemonEventKind) -> &'static str {
    match kind {
        DaemonEventKind::Spawned => "spawned",
        DaemonEventKind::Exited => "exited",
        DaemonEventKind::IdleKilled => "idle_killed",
        DaemonEventKind::Resized => "resized",
        DaemonEventKind::Unknown => "unknown",
    }
}

/// The daemon's event as serde writes it (one line), or `{"type":"events_dropped",…}`.
fn notice_json(notice: &Notice) -> Result<String> {
    Ok(match notice {
        Notice::Event(ev) => serde_json::to_string::<DaemonEvent>(ev)?,
        Notice::Dropped(count) => {
            serde_json::json!({ "type": "events_dropped", "count": count }).to_string()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc_proto::EndReason;

    fn event(kind: DaemonEventKind) -> DaemonEvent {
        let session = "6f1c0d3e-8a5b-4c1d-9e2f-0a1b2c3d4e5f".parse().unwrap();
        DaemonEvent::new(kind, session, 1_795_387_801_123)
    }

    #[test]
    fn plain_lines() {
        let id = "6f1c0d3e-8a5b-4c1d-9e2f-0a1b2c3d4e5f";
        let at = "2026-11-22T22:50:01.123Z";
        let spawned = DaemonEvent {
            pid: Some(123),
            command: Some("bash".into()),
            ..event(DaemonEventKind::Spawned)
        };
        assert_eq!(notice_line(&Notice::Event(spawned)), format!("{at} spawned {id} pid=123 bash"));
        let exited = DaemonEvent {
            exit: Some(ExitStatus { code: Some(0), signal: None }),
            ..event(DaemonEventKind::Exited)
        };
        assert_eq!(notice_line(&Notice::Event(exited)), format!("{at} exited {id} code=0"));
        let killed = DaemonEvent {
            exit: Some(ExitStatus { code: None, signal: Some(9) }),
            end_reason: Some(EndReason::Killed),
            ..event(DaemonEventKind::Exited)
        };
        assert_eq!(
            notice_line(&Notice::Event(killed)),
            format!("{at} exited {id} signal=9 reason=killed")
        );
        let idle = event(DaemonEventKind::IdleKilled);
        assert_eq!(notice_line(&Notice::Event(idle)), format!("{at} idle_killed {id}"));
        let resized =
            DaemonEvent { cols: Some(120), rows: Some(40), ..event(DaemonEventKind::Resized) };
        assert_eq!(notice_line(&Notice::Event(resized)), format!("{at} resized {id} 120x40"));
        assert_eq!(notice_line(&Notice::Dropped(3)), "[missed 3 events]");
    }

    #[test]
    fn json_lines() {
        let line = notice_json(&Notice::Dropped(2)).unwrap();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value, serde_json::json!({ "type": "events_dropped", "count": 2 }));
        let spawned = DaemonEvent { pid: Some(7), ..event(DaemonEventKind::Spawned) };
        let line = notice_json(&Notice::Event(spawned)).unwrap();
        assert!(!line.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["event"], "spawned");
        assert_eq!(value["pid"], 7);
    }
}
