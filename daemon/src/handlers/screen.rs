//! `screen`: what a session's terminal shows, from its screen model.

use bytes::Bytes;
use ipc_proto::{DaemonMessage, Frame, ScreenBuffer, ScreenReply, ScreenRequest};

use super::{session, ReplyError};
use crate::connection::Connection;
use crate::session::screen::Buffer;

/// The most text a `screen` reply carries in its JSON header.
const MAX_TEXT: usize = ipc_proto::MAX_PAYLOAD_LEN / 2;

/// Answers with the screen's text and state, and with `ansi` the bytes that reproduce it.
pub async fn handle(conn: &mut Connection, id: u64, req: ScreenRequest) -> Result<(), ReplyError> {
    let session = session(conn, req.session)?;
    let snap =
        session.snapshot(req.scrollback as usize).map_err(|e| ReplyError::bad(e.to_string()))?;
    // One frame carries it all; the header gets half of what is left beside the payload.
    let text: usize = snap.lines.iter().map(|l| l.len() + 8).sum();
    let payload = if req.ansi { snap.ansi.len() } else { 0 };
    if text > MAX_TEXT || payload + text > ipc_proto::MAX_PAYLOAD_LEN {
        return Err(ReplyError::bad(format!(
            "the screen with {} lines of scrollback takes {} bytes, more than one frame \
             holds; ask for fewer scrollback lines",
            snap.scrollback_lines,
            payload + text
        )));
    }
    let reply = ScreenReply {
        session: req.session,
        offset: snap.offset,
        cols: snap.cols,
        rows: snap.rows,
        cursor_row: snap.cursor.0,
        cursor_col: snap.cursor.1,
        cursor_visible: snap.cursor_visible,
        title: snap.title,
        buffer: match snap.buffer {
            Buffer::Main => ScreenBuffer::Main,
            Buffer::Alternate => ScreenBuffer::Alternate,
        },
        lines: snap.lines,
        scrollback_lines: snap.scrollback_lines as u32,
    };
    let data = if req.ansi { Bytes::from(snap.ansi) } else { Bytes::new() };
    let _ = conn.out.send(Frame::with_data(id, DaemonMessage::Screen(reply), data)).await;
    Ok(())
}
