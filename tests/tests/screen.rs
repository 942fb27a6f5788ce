//! Every session keeps a screen: `screen` answers with what the terminal shows (text,
//! cursor, title, buffer) at an output offset, and with `ansi` the bytes that reproduce
//! it; the emulator never answers a program's queries.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ipc_proto::{AttachMode, SpawnRequest};
use ptyd_tests::{read_to_exit, read_until, Daemon, DaemonOptions, RawConn, RawFrame, TIMEOUT};
use serde_json::{json, Value};

async fn screen(conn: &mut RawConn, session: &str, extra: Value) -> Result<RawFrame> {
    let mut req = json!({"type": "screen", "session": session});
    if let (Some(req), Some(extra)) = (req.as_object_mut(), extra.as_object()) {
        req.extend(extra.clone());
    }
    let reply = conn.request(req).await?;
    ensure!(reply.kind() == "screen", "{}", reply.header);
    Ok(reply)
}

/// Polls `screen` until `check` holds for its reply (output is drawn asynchronously).
async fn screen_until(
    conn: &mut RawConn,
    session: &str,
    extra: Value,
    check: impl Fn(&RawFrame) -> bool,
) -> Result<RawFrame> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let reply = screen(conn, session, extra.clone()).await?;
        if check(&reply) {
            return Ok(reply);
        }
        ensure!(tokio::time::Instant::now() < deadline, "screen never matched: {}", reply.header);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn line(reply: &RawFrame, i: usize) -> &str {
    reply.header["lines"][i].as_str().unwrap_or("")
}

#[tokio::test]
async fn screen_shows_what_a_program_drew_where_it_drew_it() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    let script =
        r#"printf 'first\nsecond\033[1;8Hover\033[3;3Hx\033]2;my title\007'; exec sleep 100"#;
    let mut req = SpawnRequest::new("sh", ["-c", script]);
    (req.cols, req.rows) = (20, 4);
    let s = client.spawn(req).await?;
    let mut conn = RawConn::connect_hello(daemon.socket()).await?;
    let id = s.session.to_string();
    let reply = screen_until(&mut conn, &id, json!({}), |r| line(r, 2) == "  x").await?;
    let h = &reply.header;
    ensure!(line(&reply, 0) == "first  over", "{h}");
    ensure!(line(&reply, 1) == "second", "{h}");
    ensure!(h["lines"].as_array().map(Vec::len) == Some(4), "{h}");
    ensure!(h["cursor_row"] == 2 && h["cursor_col"] == 3, "{h}");
    ensure!(h["title"] == "my title" && h["buffer"] == "main", "{h}");
    ensure!(h["cols"] == 20 && h["rows"] == 4 && h["scrollback_lines"] == 0, "{h}");
    let end = client.info(s.session).await?.output_offset;
    ensure!(h["offset"] == end, "the screen reflects all {end} bytes: {h}");
    ensure!(reply.payload.is_empty(), "no snapshot bytes unless asked");

    // With ansi, the payload reproduces it; resizing follows the terminal.
    let reply = screen(&mut conn, &id, json!({"ansi": true})).await?;
    let text = String::from_utf8_lossy(&reply.payload);
    ensure!(text.contains("first") && text.contains("\x1b]2;my title\x07"), "{text:?}");
    client.resize(s.session, 30, 6).await?;
    let reply = screen(&mut conn, &id, json!({})).await?;
    ensure!(reply.header["cols"] == 30 && reply.header["rows"] == 6, "{}", reply.header);
    Ok(())
}

#[tokio::test]
async fn the_alternate_screen_and_history_are_reported() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().args(["--scrollback-lines", "50"])).await?;
    let client = daemon.try_client().await?;
    let script = r#"i=0; while [ $i -lt 30 ]; do echo "history $i"; i=$((i+1)); done; printf '\033[?1049h\033[Hfull screen'; exec sleep 100"#;
    let mut req = SpawnRequest::new("sh", ["-c", script]);
    (req.cols, req.rows) = (20, 5);
    let s = client.spawn(req).await?;
    let mut conn = RawConn::connect_hello(daemon.socket()).await?;
    let id = s.session.to_string();
    let reply = screen_until(&mut conn, &id, json!({"scrollback": 10}), |r| {
        r.header["buffer"] == "alternate"
    })
    .await?;
    let h = &reply.header;
    ensure!(h["scrollback_lines"] == 10, "{h}");
    // History is the main screen's, oldest first: the 10 lines before its last 5 rows.
    ensure!(line(&reply, 0) == "history 16" && line(&reply, 9) == "history 25", "{h}");
    ensure!(line(&reply, 10) == "full screen", "{h}");
    // More history than kept is capped at what is kept.
    let reply = screen(&mut conn, &id, json!({"scrollback": 1000})).await?;
    let kept = reply.header["scrollback_lines"].as_u64().context("scrollback_lines")?;
    ensure!(kept <= 50, "{kept} lines of history with --scrollback-lines 50");
    Ok(())
}

#[tokio::test]
async fn queries_get_no_answer_from_ptyd() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    // Device attributes and a cursor position report: a real terminal would answer both
    // on the program's input. Nobody is attached, so only ptyd could.
    let script = r#"stty raw -echo; printf '\033[c\033[6n\033[>c\033]10;?\007'; if IFS= read -rs -t 1 -n 1 c; then printf 'GOT-INPUT'; else printf 'NO-INPUT'; fi; stty sane"#;
    let s = client.spawn(SpawnRequest::new("bash", ["--norc", "-c", script])).await?;
    client.wait(s.session, Some(TIMEOUT)).await?;
    let (read, data) = client.read(s.session, Some(0), None).await?;
    let out = String::from_utf8_lossy(&data);
    ensure!(out.contains("NO-INPUT"), "the program got input: {out:?} ({read:?})");
    Ok(())
}

#[tokio::test]
async fn an_unknown_session_is_named() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let mut conn = RawConn::connect_hello(daemon.socket()).await?;
    let id = "00000000-0000-4000-8000-000000000000";
    let reply = conn.request(json!({"type": "screen", "session": id})).await?;
    ensure!(reply.error_code() == Some("HandleNotFound"), "{}", reply.header);
    ensure!(reply.error_message().unwrap_or_default().contains(id), "{}", reply.header);
    // An exited session still shows its last screen.
    let client = daemon.try_client().await?;
    let (s, mut att) = client
        .spawn_attached(SpawnRequest::new("echo", ["bye"]), AttachMode { lossless: true })
        .await?;
    read_until(&mut att, "bye", TIMEOUT).await?;
    read_to_exit(&mut att, TIMEOUT).await?;
    let reply = screen(&mut conn, &s.session.to_string(), json!({})).await?;
    ensure!(line(&reply, 0) == "bye", "{}", reply.header);
    Ok(())
}
