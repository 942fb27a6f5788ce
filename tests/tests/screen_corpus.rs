//! The snapshot round trip over real programs' output: each case runs a real program in
//! ptyd, then feeds every byte it printed into an emulator of its own here (A) and ptyd's
//! snapshot of the same screen into a fresh one (B). A and B must agree on every cell
//! (text, colours, attributes), the cursor, and the modes a program can set.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ipc_proto::{Client, SessionId, SpawnRequest};
use ptyd_tests::{Daemon, DaemonOptions, TIMEOUT};

const SCROLLBACK: usize = 200;

/// Waits until the program has been quiet for a moment: its screen is drawn.
async fn settle(client: &Client, s: SessionId) -> Result<()> {
    client.wait_quiet(s, Duration::from_millis(300), Some(TIMEOUT)).await?;
    Ok(())
}

/// Every byte the session printed (the daemon keeps them all in these tests).
async fn all_output(client: &Client, s: SessionId) -> Result<Vec<u8>> {
    let (reply, data) = client.read(s, Some(0), None).await?;
    ensure!(reply.dropped == 0 && reply.offset == 0, "output was not all kept: {reply:?}");
    Ok(data.to_vec())
}

fn describe(screen: &vt100::Screen) -> String {
    let (_, cols) = screen.size();
    screen.rows(0, cols).collect::<Vec<_>>().join("\n")
}

/// A (the raw bytes) and B (ptyd's snapshot) agree.
fn same(case: &str, a: &vt100::Screen, b: &vt100::Screen) -> Result<()> {
    ensure!(a.size() == b.size(), "{case}: size {:?} vs {:?}", a.size(), b.size());
    let (rows, cols) = a.size();
    for r in 0..rows {
        for c in 0..cols {
            let (x, y) = (a.cell(r, c).context("cell")?, b.cell(r, c).context("cell")?);
            let fx = (
                x.contents(),
                x.fgcolor(),
                x.bgcolor(),
                x.bold(),
                x.italic(),
                x.underline(),
                x.inverse(),
            );
            let fy = (
                y.contents(),
                y.fgcolor(),
                y.bgcolor(),
                y.bold(),
                y.italic(),
                y.underline(),
                y.inverse(),
            );
            ensure!(
                fx == fy,
                "{case}: cell {r},{c}: {fx:?} vs {fy:?}\nA:\n{}\nB:\n{}",
                describe(a),
                describe(b)
            );
        }
    }
    let modes = |s: &vt100::Screen| {
        (
            s.cursor_position(),
            s.hide_cursor(),
            s.alternate_screen(),
            s.application_cursor(),
            s.application_keypad(),
            s.bracketed_paste(),
            s.mouse_protocol_mode(),
            s.mouse_protocol_encoding(),
        )
    };
    ensure!(modes(a) == modes(b), "{case}: cursor and modes {:?} vs {:?}", modes(a), modes(b));
    Ok(())
}

/// Runs `req`, types `keys` (each after the screen settled), and checks the round trip.
async fn round_trip(client: &Client, case: &str, req: SpawnRequest, keys: &[&[u8]]) -> Result<()> {
    let (cols, rows) = (req.cols, req.rows);
    let s = client.spawn(req).await?.session;
    settle(client, s).await?;
    for key in keys {
        client.input(s, key.to_vec()).await?;
        // The answer to the key has begun (from the input mark on), then it settles: on a
        // busy machine the program may start drawing only after the quiet period.
        client.wait_for(s, "(?s).", None, Some(TIMEOUT)).await?;
        settle(client, s).await?;
    }
    let raw = all_output(client, s).await?;
    let (reply, snapshot) = client.screen(s, SCROLLBACK as u32, true).await?;
    ensure!(
        reply.offset == raw.len() as u64,
        "{case}: the screen is at {} of {}",
        reply.offset,
        raw.len()
    );
    let mut a = vt100::Parser::new(rows, cols, SCROLLBACK);
    a.process(&raw);
    let mut b = vt100::Parser::new(rows, cols, SCROLLBACK);
    b.process(&snapshot);
    same(case, a.screen(), b.screen())?;
    // History too: the same lines scrolled off the top.
    let history = |p: &mut vt100::Parser| {
        p.screen_mut().set_scrollback(usize::MAX);
        let n = p.screen().scrollback();
        p.screen_mut().set_scrollback(0);
        n
    };
    ensure!(history(&mut a) == history(&mut b), "{case}: history lengths differ");
    client.kill(s, None).await?;
    Ok(())
}

fn sized(command: &str, args: &[&str], cols: u16, rows: u16) -> SpawnRequest {
    let mut req = SpawnRequest::new(command, args.iter().copied());
    (req.cols, req.rows) = (cols, rows);
    req
}

#[tokio::test]
async fn snapshots_of_real_programs_reproduce_their_screens() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().args([
        "--replay-bytes",
        "16777216",
        "--scrollback-lines",
        "200",
    ]))
    .await?;
    let client = daemon.try_client().await?;
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("main.rs");
    std::fs::write(
        &source,
        "// A comment\nfn main() {\n    let x = \"text\";\n    println!(\"{x} {}\", 42);\n}\n",
    )?;
    let src = source.to_str().context("path")?;

    round_trip(
        &client,
        "vim editing with syntax colours",
        sized("vim", &["-u", "NONE", "-N", "-c", "syntax on", "-c", "set nu", src], 80, 24),
        &[b"3G", b"A // edited\x1b", b"ggO/* new */\x1b"],
    )
    .await?;
    round_trip(&client, "top", sized("top", &["-d", "100"], 100, 30), &[]).await?;
    round_trip(&client, "less", sized("less", &["/etc/services"], 80, 24), &[b" ", b"G"]).await?;
    round_trip(
        &client,
        "ls --color in a narrow terminal",
        sized(
            "sh",
            &["-c", "ls --color=always -l /usr/lib /usr/bin | head -80; sleep 100"],
            40,
            20,
        ),
        &[],
    )
    .await?;
    round_trip(
        &client,
        "long wrapping lines",
        sized("sh", &["-c", "i=0; while [ $i -lt 12 ]; do printf '%0300d\\n' $i; i=$((i+1)); done; printf 'tail'; sleep 100"], 30, 10),
        &[],
    )
    .await?;
    round_trip(
        &client,
        "alternate screen entered and left",
        sized("sh", &["-c", "echo main one; printf '\\033[?1049h\\033[Hin the alternate screen'; printf '\\033[?1049l'; echo main two; sleep 100"], 40, 8),
        &[],
    )
    .await?;
    round_trip(
        &client,
        "mouse reporting left on",
        sized("sh", &["-c", "printf '\\033[?1002h\\033[?1006h\\033[?2004h\\033[?1h\\033=\\033[31mred\\033[m'; sleep 100"], 40, 8),
        &[],
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_resize_in_the_middle_is_followed() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    let s = client.spawn(sized("bash", &["--norc", "--noprofile", "-i"], 60, 10)).await?.session;
    settle(&client, s).await?;
    client.input(s, b"seq 1 30\r".to_vec()).await?;
    // Waited for from the input on (a quiet period alone may end before a busy machine
    // has run the command), then settled.
    client.wait_for(s, r"\b30\r\n", None, Some(TIMEOUT)).await?;
    settle(&client, s).await?;
    client.resize(s, 30, 6).await?;
    client.input(s, b"echo $(tput cols)x$(tput lines) after-resize\r".to_vec()).await?;
    client.wait_for(s, r"\d+x\d+ after-resize", None, Some(TIMEOUT)).await?;
    settle(&client, s).await?;
    let (reply, snapshot) = client.screen(s, 0, true).await?;
    ensure!(reply.cols == 30 && reply.rows == 6, "{reply:?}");
    ensure!(reply.lines.iter().any(|l| l == "30x6 after-resize"), "{:?}", reply.lines);
    let mut b = vt100::Parser::new(6, 30, 0);
    b.process(&snapshot);
    let shown: Vec<String> = b.screen().rows(0, 30).map(|r| r.trim_end().to_string()).collect();
    ensure!(shown == reply.lines, "{shown:?} vs {:?}", reply.lines);
    ensure!(b.screen().cursor_position() == (reply.cursor_row, reply.cursor_col));
    Ok(())
}
