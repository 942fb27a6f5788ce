//! `wait_for` and `wait_quiet`: resolve on what a session prints, race-free by offset.

use std::sync::Arc;
use std::time::Duration;

use ipc_proto::{
    DaemonMessage, ErrorCode, Frame, MatchOn, MatchReply, QuietReply, WaitForRequest,
    WaitQuietRequest,
};
use regex::bytes::Regex;

use super::query::within;
use super::{answer_later, send_result, session, ReplyError};
use crate::connection::Connection;
use crate::session::{AttachMode, Session, Subscription};

/// Output searched by one `wait_for` is capped: older bytes are let go so a flood
/// cannot grow the buffer without bound (a match longer than this is not found).
const SEARCH_WINDOW: usize = 1024 * 1024;

pub fn handle_wait_for(
    conn: &mut Connection,
    id: u64,
    req: WaitForRequest,
) -> Result<(), ReplyError> {
    let session = session(conn, req.session)?;
    let regex =
        Regex::new(&req.pattern).map_err(|e| ReplyError::bad(format!("invalid regex: {e}")))?;
    if req.on == MatchOn::Screen {
        session.screen_text().map_err(|e| ReplyError::bad(e.to_string()))?;
        return wait_for_screen(conn, id, session, regex, req);
    }
    // Without `since`, output from the latest input on counts (all of it before any):
    // an answer that came before this request is still found. Version 1 clients keep
    // their meaning: output from this moment on.
    let since = req.since.unwrap_or_else(|| match conn.protocol {
        1 => session.output_end(),
        _ => session.input_mark(),
    });
    let (replay, _, sub) = session.subscribe(Some(since), AttachMode::Lossy)?;
    let out = conn.out.clone();
    answer_later(conn, async move {
        let mut search =
            Search { buf: replay.data.to_vec(), base: replay.offset, dropped: replay.dropped };
        let found = within(req.timeout_ms, search.run(&regex, &session, sub)).await;
        let result = match found {
            Ok(Ok(reply)) => Ok(Frame::new(id, DaemonMessage::Matched(reply))),
            Ok(Err(e)) => Err(e),
            Err(ms) => Err(ReplyError::new(
                ErrorCode::Timeout,
                format!("pattern {:?} did not match within {ms} ms", req.pattern),
            )),
        };
        send_result(&out, id, result).await;
    });
    Ok(())
}

/// `wait_for` on the screen: the rendered text is checked now and after every output
/// chunk (a subscriber gets a chunk only after the screen has taken it in).
fn wait_for_screen(
    conn: &mut Connection,
    id: u64,
    session: Arc<Session>,
    regex: Regex,
    req: WaitForRequest,
) -> Result<(), ReplyError> {
    // Subscribed before the first look, so no redraw can slip between the two.
    let (_, _, sub) = session.subscribe(Some(session.output_end()), AttachMode::Lossy)?;
    let out = conn.out.clone();
    answer_later(conn, async move {
        let look = |session: &Session| {
            let (offset, lines) = session.screen_text().ok()?;
            let text = lines.join("\n");
            let caps = regex.captures(text.as_bytes())?;
            let m = caps.get(0)?;
            let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            Some(MatchReply {
                session: session.id,
                offset,
                end: offset,
                text: s(m.as_bytes()),
                groups: caps.iter().skip(1).map(|g| g.map(|g| s(g.as_bytes()))).collect(),
                dropped: 0,
            })
        };
        let watch = async {
            if let Some(reply) = look(&session) {
                return Ok(reply);
            }
            if let Some(sub) = sub {
                while sub.rx.recv_async().await.is_ok() {
                    // Catch up with whatever else is queued before looking again.
                    while sub.rx.try_recv().is_ok() {}
                    if let Some(reply) = look(&session) {
                        return Ok(reply);
                    }
                }
            }
            look(&session).ok_or_else(|| {
                ReplyError::new(
                    ErrorCode::SessionExited,
                    format!("session {} ended before its screen matched", session.id),
                )
            })
        };
        let result = match within(req.timeout_ms, watch).await {
            Ok(Ok(reply)) => Ok(Frame::new(id, DaemonMessage::Matched(reply))),
            Ok(Err(e)) => Err(e),
            Err(ms) => Err(ReplyError::new(
                ErrorCode::Timeout,
                format!("pattern {:?} did not appear on the screen within {ms} ms", req.pattern),
            )),
        };
        send_result(&out, id, result).await;
    });
    Ok(())
}

struct Search {
    buf: Vec<u8>,
    base: u64,
    dropped: u64,
}

impl Search {
    async fn run(
        &mut self,
        regex: &Regex,
        session: &Arc<Session>,
        sub: Option<Subscription>,
    ) -> Result<MatchReply, ReplyError> {
        if let Some(sub) = sub {
            loop {
                if let Some(reply) = self.find(regex, session) {
                    return Ok(reply);
                }
                let Ok(chunk) = sub.rx.recv_async().await else { break };
                self.append(session, chunk.offset, &chunk.data);
            }
        }
        // The session ended: search what it printed last, then give up.
        let end = session.output_end();
        let held = session.read_range(self.base + self.buf.len() as u64, end);
        self.append(session, held.offset, &held.data);
        if let Some(reply) = self.find(regex, session) {
            return Ok(reply);
        }
        let status = session.exit_status().map(|s| s.to_string()).unwrap_or_else(|| "ended".into());
        Err(ReplyError::new(
            ErrorCode::SessionExited,
            format!("session {} {status} before the pattern matched", session.id),
        ))
    }

    fn append(&mut self, session: &Session, offset: u64, data: &[u8]) {
        let next = self.base + self.buf.len() as u64;
        if offset > next {
            // A gap (this lossy subscriber fell behind): take it from the ring if it can.
            let held = session.read_range(next, offset);
            if held.dropped > 0 {
                self.dropped += held.dropped;
                self.buf.clear();
                self.base = held.offset;
            }
            self.buf.extend_from_slice(&held.data);
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() > SEARCH_WINDOW {
            let cut = self.buf.len() - SEARCH_WINDOW;
            self.buf.drain(..cut);
            self.base += cut as u64;
        }
    }

    fn find(&self, regex: &Regex, session: &Session) -> Option<MatchReply> {
        let caps = regex.captures(&self.buf)?;
        let m = caps.get(0)?;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Some(MatchReply {
            session: session.id,
            offset: self.base + m.start() as u64,
            end: self.base + m.end() as u64,
            text: text(m.as_bytes()),
            groups: caps.iter().skip(1).map(|g| g.map(|g| text(g.as_bytes()))).collect(),
            dropped: self.dropped,
        })
    }
}

pub fn handle_wait_quiet(
    conn: &mut Connection,
    id: u64,
    req: WaitQuietRequest,
) -> Result<(), ReplyError> {
    let session = session(conn, req.session)?;
    if req.quiet_ms == 0 {
        return Err(ReplyError::bad("quiet_ms must be at least 1"));
    }
    let (_, _, sub) = session.subscribe(Some(session.output_end()), AttachMode::Lossy)?;
    let out = conn.out.clone();
    answer_later(conn, async move {
        let quiet = Duration::from_millis(req.quiet_ms);
        let result = match within(req.timeout_ms, until_quiet(&session, sub, quiet)).await {
            Ok(r) => r.map(|offset| {
                Frame::new(id, DaemonMessage::Quiet(QuietReply { session: session.id, offset }))
            }),
            Err(ms) => Err(ReplyError::new(
                ErrorCode::Timeout,
                format!(
                    "session {} did not go quiet for {} ms within {ms} ms",
                    session.id, req.quiet_ms
                ),
            )),
        };
        send_result(&out, id, result).await;
    });
    Ok(())
}

/// Resolves with the output offset once nothing has been printed for `quiet`.
async fn until_quiet(
    session: &Session,
    sub: Option<Subscription>,
    quiet: Duration,
) -> Result<u64, ReplyError> {
    let exited = || {
        let status = session.exit_status().map(|s| s.to_string()).unwrap_or_else(|| "ended".into());
        ReplyError::new(
            ErrorCode::SessionExited,
            format!("session {} {status} before going quiet", session.id),
        )
    };
    let sub = sub.ok_or_else(exited)?;
    // Silence that began before the call counts.
    let mut wait = quiet.saturating_sub(session.quiet_for());
    loop {
        match tokio::time::timeout(wait, sub.rx.recv_async()).await {
            Err(_) => return Ok(session.output_end()),
            Ok(Ok(_)) => wait = quiet,
            Ok(Err(_)) => return Err(exited()),
        }
    }
}
