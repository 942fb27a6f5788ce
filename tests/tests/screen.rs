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

/// Lines of `p`'s screen, trailing blanks trimmed.
fn lines_of(p: &vt100::Parser) -> Vec<String> {
    let (_, cols) = p.screen().size();
    p.screen().rows(0, cols).map(|r| r.trim_end().to_string()).collect()
}

#[tokio::test]
async fn attaching_from_the_screen_paints_exactly_what_ptyd_shows() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().args(["--replay-bytes", "256"])).await?;
    let client = daemon.try_client().await?;
    // Far more than the 256-byte window before the attach, redrawing in place (as top
    // does), then a go signal and more of it after.
    let script = r#"i=0; while [ $i -lt 300 ]; do printf '\033[H\033[2Jtick %d\n\033[7mstatus\033[m %d' $i $i; i=$((i+1)); done; read go; i=0; while [ $i -lt 200 ]; do printf '\033[2;1Hafter %d   ' $i; i=$((i+1)); done; printf '\033[3;1Hdone'"#;
    let mut req = SpawnRequest::new("sh", ["-c", script]);
    (req.cols, req.rows) = (30, 4);
    let s = client.spawn(req).await?;
    let ready = ptyd_tests::wait_until_with(TIMEOUT, async || {
        client.screen(s.session, 0, false).await.is_ok_and(|(r, _)| r.lines[0] == "tick 299")
    })
    .await;
    ensure!(ready, "the first part never finished");
    let end = client.info(s.session).await?.output_offset;
    ensure!(end > 256 * 4, "the output ({end}) is well past the window");

    // Within the window, `auto` still gives bytes.
    let att =
        client.attach_from(s.session, Some(end - 10), true, ipc_proto::ScreenStart::Auto).await?;
    ensure!(att.snapshot().is_none() && att.reply.offset == end - 10, "{:?}", att.reply);
    drop(att);

    // Older than the window: the screen, then live output from exactly its offset.
    let mut att =
        client.attach_from(s.session, Some(5), true, ipc_proto::ScreenStart::Auto).await?;
    let snapshot = att.snapshot().context("no snapshot")?.clone();
    let reply = att.reply.clone();
    ensure!(reply.cols == Some(30) && reply.rows == Some(4), "{reply:?}");
    ensure!(reply.offset == end && reply.dropped == end - 5, "{reply:?}");
    let mut term = vt100::Parser::new(4, 30, 0);
    term.process(&snapshot);
    ensure!(lines_of(&term)[..2] == ["tick 299", "status 299"], "{:?}", lines_of(&term));
    client.input(s.session, b"\n".to_vec()).await?;
    let mut next = reply.offset;
    while let Some(ev) = att.next().await {
        match ev {
            ipc_proto::SessionEvent::Output { offset, data } => {
                ensure!(offset == next, "output at {offset}, expected {next}: a gap or a repeat");
                next += data.len() as u64;
                term.process(&data);
            }
            ipc_proto::SessionEvent::Exit(_) => break,
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    let (daemon_screen, _) = client.screen(s.session, 0, false).await?;
    ensure!(
        lines_of(&term) == daemon_screen.lines,
        "{:?} vs {:?}",
        lines_of(&term),
        daemon_screen.lines
    );
    ensure!(daemon_screen.lines[2] == "done", "{:?}", daemon_screen.lines);

    // No since: a new viewer gets the screen too.
    let att = client.attach_from(s.session, None, false, ipc_proto::ScreenStart::Auto).await?;
    ensure!(att.snapshot().is_some() && att.reply.dropped == 0, "{:?}", att.reply);
    Ok(())
}

#[tokio::test]
async fn ptyctl_screen_prints_a_full_screen_program_as_drawn() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    let mut req = SpawnRequest::new("top", ["-d", "0.3"]);
    (req.cols, req.rows) = (100, 30);
    let s = client.spawn(req).await?;
    let id = s.session.to_string();
    let drawn = ptyd_tests::wait_until_with(TIMEOUT, async || {
        client
            .screen(s.session, 0, false)
            .await
            .is_ok_and(|(r, _)| r.lines[0].starts_with("top - "))
    })
    .await;
    ensure!(drawn, "top never drew its header");
    let out = daemon.ptyctl(["screen", &id]).output()?;
    ensure!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout)?;
    let lines: Vec<&str> = text.lines().collect();
    ensure!(lines.len() == 30, "one line per row: {text}");
    ensure!(lines[0].starts_with("top - ") && text.contains("PID"), "{text}");
    let out = daemon.ptyctl(["screen", &id, "--json"]).output()?;
    let v: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(v["buffer"] == "alternate" || v["buffer"] == "main", "{v}");
    ensure!(v["cols"] == 100 && v["rows"] == 30 && v["offset"].as_u64() > Some(0), "{v}");
    let out = daemon.ptyctl(["screen", &id, "--ansi"]).output()?;
    ensure!(out.stdout.starts_with(b"\x1b[?1049l"), "{:?}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}

/// A tmux server of its own for one test, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        Tmux { socket: format!("ptyd-test-{}", ptyd_tests::unique_suffix()) }
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        let out =
            std::process::Command::new("tmux").arg("-L").arg(&self.socket).args(args).output()?;
        ensure!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ =
            std::process::Command::new("tmux").args(["-L", &self.socket, "kill-server"]).output();
    }
}

#[tokio::test]
async fn ptyctl_attach_paints_vim_and_puts_the_terminal_back_on_detach() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    let vim = SpawnRequest::new(
        "vim",
        ["-u", "NONE", "-N", "-c", "set mouse=a", "-c", "echo 'vim-ready'"],
    );
    let s = client.spawn(vim).await?;
    let id = s.session.to_string();
    let ready = ptyd_tests::wait_until_with(TIMEOUT, async || {
        client
            .screen(s.session, 0, false)
            .await
            .is_ok_and(|(r, _)| r.lines.iter().any(|l| l.contains("vim-ready")))
    })
    .await;
    ensure!(ready, "vim did not start");

    let tmux = Tmux::new();
    let ptyctl = ptyd_tests::ptyctl_bin()?;
    let command = format!(
        "{} --socket {} attach {id}; echo detached-now; sleep 600",
        ptyctl.display(),
        daemon.socket().display()
    );
    tmux.run(&["-f", "/dev/null", "new-session", "-d", "-x", "90", "-y", "25", &command])?;
    // Attached: the pane shows vim's screen (the snapshot, then vim's redraw for the
    // pane's size) with vim's modes on.
    let painted = ptyd_tests::wait_until_async(TIMEOUT, || {
        tmux.run(&["capture-pane", "-p"])
            .is_ok_and(|t| t.lines().filter(|l| *l == "~").count() > 10)
    })
    .await;
    ensure!(painted, "the pane never showed vim: {:?}", tmux.run(&["capture-pane", "-p"]));
    let modes = tmux.run(&["display", "-p", "#{alternate_on} #{mouse_any_flag}"])?;
    ensure!(modes == "1 1", "while attached, alternate screen and mouse should be on: {modes}");
    // Detach with Ctrl-]: the pane is back on its own screen, mouse reporting off.
    tmux.run(&["send-keys", "C-]"])?;
    let back = ptyd_tests::wait_until_async(TIMEOUT, || {
        tmux.run(&["capture-pane", "-p"]).is_ok_and(|t| t.contains("detached-now"))
    })
    .await;
    ensure!(back, "ptyctl did not detach: {:?}", tmux.run(&["capture-pane", "-p"]));
    let modes = tmux.run(&["display", "-p", "#{alternate_on} #{mouse_any_flag}"])?;
    ensure!(modes == "0 0", "after detaching: {modes}");
    ensure!(client.info(s.session).await?.exit.is_none(), "vim runs on");
    Ok(())
}

#[tokio::test]
async fn wait_for_on_the_screen_sees_text_a_program_draws_in_place() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    // The bytes never contain "progress: 100%": each step rewrites the digits in place.
    let script = r#"printf 'progress: 0%%'; for n in 2 5 10 50 100; do sleep 0.05; printf '\033[11G%s%%' $n; done; exec sleep 100"#;
    let s = client.spawn(SpawnRequest::new("sh", ["-c", script])).await?;
    let out = daemon
        .ptyctl([
            "wait-for",
            &s.session.to_string(),
            r"(?m)^progress: (\d+)%$",
            "--screen",
            "--timeout",
            "10s",
            "--json",
        ])
        .output()?;
    ensure!(out.status.success(), "{out:?}");
    let first: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(first["groups"][0].as_str().is_some(), "{first}");
    let reply = client
        .wait_for_on(s.session, "progress: 100%", None, Some(TIMEOUT), ipc_proto::MatchOn::Screen)
        .await?;
    ensure!(reply.text == "progress: 100%", "{reply:?}");
    let (_, data) = client.read(s.session, Some(0), None).await?;
    ensure!(!String::from_utf8_lossy(&data).contains("progress: 100%"), "the bytes spell it out");
    // The screen shows it already: a later wait matches at once.
    let again = client
        .wait_for_on(
            s.session,
            "progress: 100%",
            None,
            Some(Duration::from_secs(1)),
            ipc_proto::MatchOn::Screen,
        )
        .await?;
    ensure!(again.offset >= reply.offset, "{again:?}");
    // A pattern that never appears times out, with the screen named in the message.
    match client
        .wait_for_on(
            s.session,
            "never-there",
            None,
            Some(Duration::from_millis(200)),
            ipc_proto::MatchOn::Screen,
        )
        .await
    {
        Err(ipc_proto::ClientError::Daemon { code: ipc_proto::ErrorCode::Timeout, message }) => {
            ensure!(message.contains("did not appear on the screen"), "{message}")
        }
        other => anyhow::bail!("expected a timeout, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn with_the_screen_off_attaches_fall_back_to_bytes_and_screen_says_why() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().args(["--screen", "off"])).await?;
    let client = daemon.try_client().await?;
    let s = client.spawn(SpawnRequest::new("sh", ["-c", "echo hi; exec sleep 100"])).await?;
    match client.screen(s.session, 0, false).await {
        Err(ipc_proto::ClientError::Daemon { code: ipc_proto::ErrorCode::BadRequest, message }) => {
            ensure!(message.contains("--screen off"), "{message}")
        }
        other => anyhow::bail!("expected BadRequest, got {other:?}"),
    }
    let mut att =
        client.attach_from(s.session, None, false, ipc_proto::ScreenStart::Always).await?;
    ensure!(att.snapshot().is_none(), "{:?}", att.reply);
    read_until(&mut att, "hi", TIMEOUT).await?;
    Ok(())
}
