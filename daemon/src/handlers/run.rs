//! `run`: types a command into a session's live shell and answers once the shell says it
//! has finished (its semantic prompt marks, `session/marks.rs`), with its exit status and
//! its output, bounded like `exec`'s.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ipc_proto::{DaemonMessage, ErrorCode, ExecResult, Frame, RunRequest};

use super::{answer_later, send_result, session, ReplyError};
use crate::connection::Connection;
use crate::ring::OutputRing;
use crate::session::marks::{Mark, MarkScanner, ShellState};
use crate::session::{AttachMode, InputMark};
use crate::shell_integration::Integration;

/// The most output a result carries, so it fits in one frame.
const MAX_OUTPUT: usize = ipc_proto::MAX_PAYLOAD_LEN;

/// How long a shell ptyd integrated may take to print its first prompt.
const FIRST_PROMPT: Duration = Duration::from_secs(10);

/// How long an interrupted command may take to give the prompt back.
const INTERRUPT_GRACE: Duration = Duration::from_secs(2);

/// Ctrl-C, as the terminal sends it.
const INTERRUPT: &[u8] = b"\x03";

pub async fn handle(conn: &mut Connection, id: u64, req: RunRequest) -> Result<(), ReplyError> {
    let session = session(conn, req.session)?;
    if req.command.trim().is_empty() {
        return Err(ReplyError::bad("run needs a command"));
    }
    let max_output = req.max_output.unwrap_or(MAX_OUTPUT).min(MAX_OUTPUT);
    // Subscribed before the command is typed, so no mark can come before the watch.
    let (_, _, sub) = session.subscribe(Some(session.output_end()), AttachMode::Lossless)?;
    let sub = sub.ok_or_else(|| ReplyError::new(ErrorCode::SessionExited, "session exited"))?;
    if session.shell() == ShellState::Unmarked && session.meta.integration != Integration::None {
        // A shell ptyd integrated that has not printed its first prompt yet.
        let limit = req.timeout_ms.map_or(FIRST_PROMPT, Duration::from_millis);
        let first = async {
            while session.shell() == ShellState::Unmarked {
                if sub.rx.recv_async().await.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(limit, first).await;
    }
    match session.shell() {
        ShellState::Unmarked => {
            return Err(ReplyError::new(
                ErrorCode::NoShellIntegration,
                format!(
                    "session {} shows no shell prompt marks (OSC 133), which run needs: ptyd \
                     adds them to the interactive bash and zsh it starts (unless \
                     --shell-integration off); for other programs use submit and wait-for",
                    session.id
                ),
            ))
        }
        ShellState::Running => return Err(busy(&session.id)),
        ShellState::AtPrompt => {}
    }
    let claim = session.claim_shell().ok_or_else(|| busy(&session.id))?;
    // What came before the command is not its output.
    while sub.rx.try_recv().is_ok() {}
    let text = if session.bracketed_paste() {
        format!("\x1b[200~{}\x1b[201~\r", req.command)
    } else {
        format!("{}\r", req.command)
    };
    let started = Instant::now();
    // Typed in the read loop, so that it is ordered with the requests around it.
    session.input(Bytes::from(text), InputMark::Start).await?;
    let out = conn.out.clone();
    answer_later(conn, async move {
        let _claim = claim;
        let mut watch = Watch::new(max_output);
        // The run's deadline, then (once it has passed) the interrupt's: fixed when set,
        // so a command that ignores Ctrl-C and keeps printing cannot push it back.
        let mut limit =
            req.timeout_ms.map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
        let mut timed_out = false;
        let mut gave_up = false;
        while watch.status.is_none() {
            let next = async {
                match limit {
                    Some(at) => tokio::time::timeout_at(at, sub.rx.recv_async()).await.ok(),
                    None => Some(sub.rx.recv_async().await),
                }
            };
            match next.await {
                Some(Ok(chunk)) => watch.feed(&chunk.data),
                // The shell ended (the command was `exit`, or it was killed).
                Some(Err(_)) => break,
                None if timed_out => {
                    gave_up = true;
                    break;
                }
                None => {
                    tracing::info!(session_id = %session.id, "run timed out; interrupting it");
                    timed_out = true;
                    limit = Some(tokio::time::Instant::now() + INTERRUPT_GRACE);
                    if session
                        .input(Bytes::from_static(INTERRUPT), InputMark::Continue)
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let code = match watch.status {
            Some(status) => status,
            // Without a mark: the shell's own exit code, if it ended.
            None if !gave_up => session.wait().await.code,
            None => None,
        };
        let (kept, total) = watch.output(session.size().0);
        let result = ExecResult {
            session: session.id,
            code,
            signal: None,
            timed_out,
            truncated: total > kept.len() as u64,
            total_bytes: total,
            duration_ms: started.elapsed().as_millis() as u64,
        };
        send_result(&out, id, Ok(Frame::with_data(id, DaemonMessage::RunResult(result), kept)))
            .await;
    });
    Ok(())
}

fn busy(id: &ipc_proto::SessionId) -> ReplyError {
    ReplyError::new(
        ErrorCode::SessionBusy,
        format!("session {id} is running a command; run types only at the shell's prompt"),
    )
}

/// Room kept past `max_output` for what ends the output but is not part of it: the `D`
/// mark (at most 72 bytes, see `marks.rs`) and zsh's end-of-line mark (a line of spaces).
const SLACK: usize = 16 * 1024;

/// Follows the output after the command was typed: its output lies between the `C` and
/// the `D` mark.
struct Watch {
    scanner: MarkScanner,
    started: bool,
    max_output: usize,
    /// The command's output and what ends it; the ring keeps the last bytes, counts all.
    tail: OutputRing,
    /// Bytes of the `D` mark that went into `tail` before the mark was complete.
    mark_len: usize,
    /// The `C` mark was the last thing seen.
    after_mark: bool,
    /// From the `D` mark: `Some(code)`, `Some(None)` when it named none.
    status: Option<Option<i32>>,
}

impl Watch {
    fn new(max_output: usize) -> Watch {
        Watch {
            scanner: MarkScanner::default(),
            started: false,
            max_output,
            tail: OutputRing::new(max_output + SLACK),
            mark_len: 0,
            after_mark: false,
            status: None,
        }
    }

    fn feed(&mut self, data: &[u8]) {
        if self.status.is_some() {
            return;
        }
        let mut from = 0;
        let mut end = None;
        self.skip_cr(data, &mut from);
        let mut marks = Vec::new();
        self.scanner.feed(data, |mark, at, len| marks.push((mark, at, len)));
        for (mark, at, len) in marks {
            match mark {
                Mark::OutputStart if !self.started => {
                    self.started = true;
                    from = at;
                    self.after_mark = true;
                    self.skip_cr(data, &mut from);
                }
                Mark::Finished(status) if self.started => {
                    self.tail.push(&data[from..at]);
                    self.mark_len = len;
                    self.status = Some(status);
                    end = Some(at);
                    break;
                }
                _ => {}
            }
        }
        if end.is_none() && self.started {
            self.tail.push(&data[from..]);
        }
    }

    /// Just after the `C` mark, the CR the shell integration prints with it (see
    /// `shell_integration.rs`) is not output.
    fn skip_cr(&mut self, data: &[u8], from: &mut usize) {
        if self.after_mark && *from < data.len() {
            if data[*from] == b'\r' {
                *from += 1;
            }
            self.after_mark = false;
        }
    }

    /// The kept output (its last `max_output` bytes) and the whole output's length, the
    /// `D` mark and what zsh prints before it (`prompt_sp`, on a terminal `cols` wide)
    /// left out.
    fn output(&self, cols: u16) -> (Bytes, u64) {
        let held = self.tail.since(None).data;
        let held = &held[..held.len().saturating_sub(self.mark_len)];
        let held = without_prompt_sp(held, cols);
        let cut = self.tail.since(None).data.len() - held.len();
        let kept = &held[held.len().saturating_sub(self.max_output)..];
        let total = self.tail.end().saturating_sub(cut as u64);
        (Bytes::copy_from_slice(kept), total)
    }
}

/// `out` without the end-of-line mark that zsh's `prompt_sp` option prints after a
/// command and before its precmd hooks: the mark (`PROMPT_EOL_MARK`, `%` or `#` in bold
/// reverse by default) of width W, spaces to the end of the line, `\r`, W spaces, `\r`.
fn without_prompt_sp(out: &[u8], cols: u16) -> &[u8] {
    let spaces = |s: &[u8]| s.iter().rev().take_while(|b| **b == b' ').count();
    let Some(rest) = out.strip_suffix(b"\r") else { return out };
    let mut width = spaces(rest);
    let Some(rest) = rest[..rest.len() - width].strip_suffix(b"\r") else { return out };
    let fill = spaces(rest);
    // zsh fills the line to its last column, or to the one before without `xn`.
    if fill == 0 || !(usize::from(cols) - 1..=usize::from(cols)).contains(&(fill + width)) {
        return out;
    }
    let mut rest = &rest[..rest.len() - fill];
    loop {
        if let Some(before) = strip_sgr_suffix(rest) {
            rest = before;
        } else if width > 0 && rest.last().is_some_and(|b| *b >= 0x20 && *b != 0x7f) {
            // One character, with the continuation bytes of its UTF-8 before it.
            let start = rest.iter().rposition(|b| b & 0xc0 != 0x80).unwrap_or(0);
            rest = &rest[..start];
            width -= 1;
        } else {
            break;
        }
    }
    if width == 0 {
        rest
    } else {
        // Not a mark as zsh prints it: leave the output alone.
        out
    }
}

/// `s` without the SGR sequence (`ESC [ … m`) it ends with, if it ends with one.
fn strip_sgr_suffix(s: &[u8]) -> Option<&[u8]> {
    let body = s.strip_suffix(b"m")?;
    let params = body.iter().rev().take_while(|b| b.is_ascii_digit() || **b == b';').count();
    body[..body.len() - params].strip_suffix(b"\x1b[")
}

#[cfg(test)]
mod tests {
    use super::Watch;

    #[test]
    fn the_output_is_what_lies_between_the_marks_however_it_is_split() {
        let out = b"echo hi\r\n\x1b]133;C\x07\rhi\r\nthere\r\n\x1b]133;D;3\x07\x1b]133;A\x07$ ";
        for split in 0..out.len() {
            let mut w = Watch::new(1024);
            w.feed(&out[..split]);
            w.feed(&out[split..]);
            let (kept, total) = w.output(80);
            assert_eq!(&kept[..], b"hi\r\nthere\r\n", "split at {split}");
            assert_eq!(total, 11);
            assert_eq!(w.status, Some(Some(3)));
        }
        let mut w = Watch::new(4);
        w.feed(out);
        let (kept, total) = w.output(80);
        assert_eq!((&kept[..], total), (&b"re\r\n"[..], 11), "the last bytes, the mark cut off");
    }

    #[test]
    fn zsh_end_of_line_marks_are_not_output() {
        let sp = |mark: &str, width: usize| {
            format!("{mark}{}\r{}\r", " ".repeat(20 - width), " ".repeat(width))
        };
        let bold = "\x1b[1m\x1b[7m%\x1b[27m\x1b[1m\x1b[0m";
        for (out, want) in [
            (format!("line\r\n{}", sp(bold, 1)), "line\r\n"),
            (format!("foo{}", sp(bold, 1)), "foo"),
            (format!("x\r\n{}", sp("<eol>", 5)), "x\r\n"),
            (format!("x\r\n{}", sp("", 0)), "x\r\n"),
            // Not zsh's: left alone.
            ("a   \r \r".to_string(), "a   \r \r"),
            ("plain\r\n".to_string(), "plain\r\n"),
        ] {
            assert_eq!(
                String::from_utf8_lossy(super::without_prompt_sp(out.as_bytes(), 20)),
                want,
                "{out:?}"
            );
        }
    }
}
