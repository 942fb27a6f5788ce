//! The agent API against a real daemon: `wait_for`, `wait_quiet`, `submit` to real REPLs,
//! `exec`, `read`, leases against the idle timeout, and daemon-wide events.
//!
//! Conditions are awaited through the API itself (or bounded polling of `info` and
//! `/proc`), never by sleeping for a fixed time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ipc_proto::{
    Client, ClientError, DaemonEvent, DaemonEventKind, ErrorCode, ExecRequest, Notice, SessionId,
    SessionState, SpawnReply, SpawnRequest,
};
use ptyd_tests::{
    pids_with_cmdline, process_alive, wait_until_async, wait_until_with, zombie_children, Daemon,
    DaemonOptions, TIMEOUT,
};
use tokio::sync::mpsc::Receiver;

/// Spawns `command args…` (unattached, daemon defaults otherwise).
async fn spawn(client: &Client, command: &str, args: &[&str]) -> Result<SpawnReply> {
    Ok(client.spawn(SpawnRequest::new(command, args.iter().copied())).await?)
}

/// An `exec` of `command args…` with every option at its default.
fn exec_req(command: &str, args: &[&str]) -> ExecRequest {
    ExecRequest {
        command: command.to_string(),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: BTreeMap::new(),
        cwd: None,
        cols: 80,
        rows: 24,
        timeout_ms: None,
        max_output: None,
    }
}

/// The daemon's error code and message, failing when the call succeeded.
fn daemon_error<T: std::fmt::Debug>(result: Result<T, ClientError>) -> Result<(ErrorCode, String)> {
    match result {
        Ok(v) => bail!("expected an error from ptyd, got {v:?}"),
        Err(ClientError::Daemon { code, message }) => Ok((code, message)),
        Err(e) => bail!("expected an error reply from ptyd, got {e}"),
    }
}

/// Waits until the session has printed at least `bytes` bytes.
async fn wait_output_offset(client: &Client, session: SessionId, bytes: u64) -> Result<()> {
    let reached = wait_until_with(TIMEOUT, async || {
        client.info(session).await.is_ok_and(|i| i.output_offset >= bytes)
    })
    .await;
    ensure!(reached, "session never printed {bytes} bytes: {:?}", client.info(session).await?);
    Ok(())
}

/// Output of `seq 1 n` on a terminal (`\n` becomes `\r\n`).
fn seq_output(n: u32) -> String {
    (1..=n).map(|i| format!("{i}\r\n")).collect()
}

/// A process-wide unique suffix for command lines this test looks for in `/proc`.
fn unique() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    format!("{}{:03}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The daemon-wide events of `session`, in arrival order, up to and including its
/// `exited` event.
async fn events_until_exit(
    events: &mut Receiver<Notice>,
    session: SessionId,
) -> Result<Vec<DaemonEvent>> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut seen = Vec::new();
    loop {
        let notice = tokio::time::timeout_at(deadline, events.recv())
            .await
            .with_context(|| format!("no exited event within {TIMEOUT:?}; got {seen:?}"))?
            .context("the event stream ended")?;
        match notice {
            Notice::Event(ev) if ev.session == session => {
                let done = ev.event == DaemonEventKind::Exited;
                seen.push(ev);
                if done {
                    return Ok(seen);
                }
            }
            Notice::Event(_) => {}
            Notice::Dropped(n) => bail!("missed {n} events"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// submit to real REPLs

#[tokio::test]
async fn submit_a_multi_line_function_to_the_python_repl() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    let repl = spawn(&client, "python3", &["-q"]).await?;
    let prompt = client.wait_for(repl.session, ">>> ", Some(0), Some(TIMEOUT)).await?;
    // The blank line ends the block; the call runs as the next statement.
    let submitted =
        client.submit(repl.session, "def f(x):\n    return x * 2\n\nprint(f(21))").await?;
    let result =
        client.wait_for(repl.session, r"(?m)^42\r?$", Some(prompt.end), Some(TIMEOUT)).await;
    let (_, shown) = client.read(repl.session, Some(0), None).await?;
    let result = result.with_context(|| {
        format!(
            "python3 did not print 42 (bracketed paste: {}); screen so far: {:?}",
            submitted.bracketed_paste,
            String::from_utf8_lossy(&shown)
        )
    })?;
    ensure!(result.text.starts_with("42"), "{result:?}");
    let (_, text) = client.read(repl.session, Some(result.offset), Some(2)).await?;
    ensure!(&text[..] == b"42", "read at the match offset: {text:?}");
    // The REPL is back at its prompt and still takes input.
    client.wait_for(repl.session, ">>> ", Some(result.end), Some(TIMEOUT)).await?;
    client.submit(repl.session, "print(f(50))").await?;
    client.wait_for(repl.session, r"(?m)^100\r?$", Some(result.end), Some(TIMEOUT)).await?;
    client.kill(repl.session, None).await?;
    Ok(())
}

#[tokio::test]
async fn submit_a_multi_line_loop_to_bash_as_a_bracketed_paste() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    let bash = spawn(&client, "bash", &["--norc", "--noprofile", "-i"]).await?;
    // `$ ` for users, `# ` for root; bash 5.2 turns bracketed paste on before it.
    let prompt = client.wait_for(bash.session, r"[$#] $", Some(0), Some(TIMEOUT)).await?;
    let (_, before) = client.read(bash.session, Some(0), Some(prompt.end as usize)).await?;
    ensure!(
        before.windows(8).any(|w| w == b"\x1b[?2004h"),
        "bash did not enable bracketed paste: {:?}",
        String::from_utf8_lossy(&before)
    );
    let submitted = client.submit(bash.session, "for i in 1 2 3; do\n echo item-$i\ndone").await?;
    ensure!(submitted.bracketed_paste, "bash enabled bracketed paste, but submit did not use it");
    let m =
        client.wait_for(bash.session, r"item-(\d)\r\n", Some(prompt.end), Some(TIMEOUT)).await?;
    ensure!(m.groups == [Some("1".to_string())], "{m:?}");
    let m3 = client.wait_for(bash.session, "item-3", Some(m.end), Some(TIMEOUT)).await?;
    let (_, between) =
        client.read(bash.session, Some(m.offset), Some((m3.end - m.offset) as usize)).await?;
    ensure!(
        String::from_utf8_lossy(&between) == "item-1\r\nitem-2\r\nitem-3",
        "the loop ran once per item, in order: {:?}",
        String::from_utf8_lossy(&between)
    );
    client.submit(bash.session, "exit 6").await?;
    let status = client.wait(bash.session, Some(TIMEOUT)).await?;
    ensure!(status.code == Some(6), "{status:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// wait_for

#[tokio::test]
async fn wait_for_since_zero_sees_output_printed_before_the_call() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    let s = spawn(&client, "sh", &["-c", "echo early; sleep 30"]).await?;
    wait_output_offset(&client, s.session, "early\r\n".len() as u64).await?;

    let m = client.wait_for(s.session, "ear(ly)", Some(0), Some(TIMEOUT)).await?;
    ensure!((m.offset, m.end, m.dropped) == (0, 5, 0), "{m:?}");
    ensure!(m.text == "early" && m.groups == [Some("ly".to_string())], "{m:?}");
    let (range, bytes) =
        client.read(s.session, Some(m.offset), Some((m.end - m.offset) as usize)).await?;
    ensure!(&bytes[..] == b"early", "read [offset, end): {bytes:?}");
    ensure!((range.offset, range.next) == (m.offset, m.end), "{range:?}");

    // From an offset inside the output: only what follows it is searched.
    let m = client.wait_for(s.session, "rly", Some(2), Some(TIMEOUT)).await?;
    ensure!((m.offset, m.end) == (2, 5), "{m:?}");
    let err = daemon_error(
        client.wait_for(s.session, "early", Some(1), Some(Duration::from_millis(200))).await,
    )?;
    ensure!(err.0 == ErrorCode::Timeout, "since 1 must not see the match at 0: {err:?}");
    client.kill(s.session, None).await?;
    Ok(())
}

/// Without `since`, output from the latest input on counts, printed before the call or
/// not; output from before that input does not.
#[tokio::test]
async fn wait_for_without_since_starts_at_the_latest_input() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    let s = spawn(&client, "sh", &["-c", "echo early; read x; echo late-$x; sleep 30"]).await?;
    wait_output_offset(&client, s.session, "early\r\n".len() as u64).await?;
    client.input(s.session, &b"now\n"[..]).await?;
    // The answer is in before the wait is asked for, and is still found.
    let late = client.wait_for(s.session, r"late-\w+", Some(0), Some(TIMEOUT)).await?;
    let m = client.wait_for(s.session, r"late-\w+", None, Some(TIMEOUT)).await?;
    ensure!(m.text == "late-now" && m.offset == late.offset, "{m:?} vs {late:?}");
    let (_, bytes) = client.read(s.session, Some(m.offset), Some(m.text.len())).await?;
    ensure!(&bytes[..] == b"late-now", "{bytes:?}");
    let err = daemon_error(
        client.wait_for(s.session, "early", None, Some(Duration::from_millis(300))).await,
    )?;
    ensure!(err.0 == ErrorCode::Timeout, "output before the input must not match: {err:?}");
    client.kill(s.session, None).await?;
    Ok(())
}

#[tokio::test]
async fn wait_for_times_out_cleanly_and_the_connection_keeps_working() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    let s = spawn(&client, "cat", &[]).await?;
    let started = Instant::now();
    let (code, message) = daemon_error(
        client.wait_for(s.session, "never", Some(0), Some(Duration::from_millis(250))).await,
    )?;
    let took = started.elapsed();
    ensure!(code == ErrorCode::Timeout, "{code}: {message}");
    ensure!(message.contains("did not match within 250 ms"), "{message}");
    ensure!(took >= Duration::from_millis(250), "timed out early, after {took:?}");
    ensure!(took < TIMEOUT, "timed out late, after {took:?}");

    // The same connection still serves requests, including another wait_for.
    ensure!(client.info(s.session).await?.state == SessionState::Running);
    client.input(s.session, &b"after the timeout\n"[..]).await?;
    let m = client.wait_for(s.session, "after the timeout", Some(0), Some(TIMEOUT)).await?;
    ensure!(m.offset == 0, "{m:?}");
    ensure!(client.list().await?.active == 1);
    client.kill(s.session, None).await?;
    Ok(())
}

#[tokio::test]
async fn wait_for_reports_the_exit_when_the_process_dies_first() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    // Racing the exit: the wait may start before or after it; the answer is the same.
    let s = spawn(&client, "sh", &["-c", "echo x; exit 5"]).await?;
    let (code, message) =
        daemon_error(client.wait_for(s.session, "never", Some(0), Some(TIMEOUT)).await)?;
    ensure!(code == ErrorCode::SessionExited, "{code}: {message}");
    ensure!(message.contains("exited with code 5"), "{message}");
    ensure!(message.contains(&s.session.to_string()), "{message}");

    // On an already exited session, the retained output is still searched.
    client.wait(s.session, Some(TIMEOUT)).await?;
    let m = client.wait_for(s.session, "x", Some(0), Some(TIMEOUT)).await?;
    ensure!((m.offset, m.end) == (0, 1), "{m:?}");
    let (code, message) =
        daemon_error(client.wait_for(s.session, "never", None, Some(TIMEOUT)).await)?;
    ensure!(code == ErrorCode::SessionExited, "{code}: {message}");
    ensure!(message.contains("exited with code 5"), "{message}");
    Ok(())
}

#[tokio::test]
async fn wait_for_rejects_a_bad_regex() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    let s = spawn(&client, "cat", &[]).await?;
    let (code, message) =
        daemon_error(client.wait_for(s.session, "(", Some(0), Some(TIMEOUT)).await)?;
    ensure!(code == ErrorCode::BadRequest, "{code}: {message}");
    ensure!(message.starts_with("invalid regex"), "{message}");
    // Also past the end of the output.
    let (code, message) =
        daemon_error(client.wait_for(s.session, "x", Some(1000), Some(TIMEOUT)).await)?;
    ensure!(code == ErrorCode::BadRequest, "{code}: {message}");
    ensure!(client.info(s.session).await?.state == SessionState::Running);
    client.kill(s.session, None).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// wait_quiet

#[tokio::test]
async fn wait_quiet_resolves_after_a_burst_at_its_end() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    let s = spawn(&client, "sh", &["-c", "seq 1 20000; sleep 30"]).await?;
    // The burst has begun, so the quiet cannot be the silence before it.
    wait_output_offset(&client, s.session, 1).await?;
    let quiet = client.wait_quiet(s.session, Duration::from_millis(500), Some(TIMEOUT)).await?;
    let info = client.info(s.session).await?;
    let total = seq_output(20000).len() as u64;
    ensure!(quiet.offset == info.output_offset, "{quiet:?} vs {info:?}");
    ensure!(quiet.offset == total, "quiet at {} of {total} bytes", quiet.offset);
    let (_, tail) = client.read(s.session, Some(total - 7), None).await?;
    ensure!(&tail[..] == b"20000\r\n", "{tail:?}");
    client.kill(s.session, None).await?;
    Ok(())
}

#[tokio::test]
async fn wait_quiet_times_out_while_the_session_keeps_printing() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    let s = spawn(&client, "sh", &["-c", "while :; do echo tick; sleep 0.05; done"]).await?;
    wait_output_offset(&client, s.session, 1).await?;
    let started = Instant::now();
    let (code, message) = daemon_error(
        client
            .wait_quiet(s.session, Duration::from_millis(500), Some(Duration::from_secs(1)))
            .await,
    )?;
    ensure!(code == ErrorCode::Timeout, "{code}: {message}");
    ensure!(started.elapsed() >= Duration::from_secs(1), "{:?}", started.elapsed());
    ensure!(client.info(s.session).await?.state == SessionState::Running);
    client.kill(s.session, None).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// exec

#[tokio::test]
async fn exec_reports_exit_codes_and_signals() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    for (script, code, signal) in [
        ("echo out-0; exit 0", Some(0), None),
        ("echo out-1; exit 1", Some(1), None),
        ("echo out-3; exit 3", Some(3), None),
        ("kill -TERM $$", None, Some(15)),
    ] {
        let (result, output) = client.exec(exec_req("sh", &["-c", script])).await?;
        ensure!(result.code == code && result.signal == signal, "{script}: {result:?}");
        ensure!(!result.timed_out && !result.truncated, "{script}: {result:?}");
        ensure!(result.total_bytes == output.len() as u64, "{script}: {result:?}");
        if let Some(code) = code {
            let expected = format!("out-{code}\r\n");
            ensure!(output == expected.as_bytes(), "{script}: {output:?}");
        }
        // The session is retained like any other, labelled as an exec.
        let info = client.info(result.session).await?;
        ensure!(info.state == SessionState::Exited, "{info:?}");
        ensure!(info.exit.is_some_and(|e| e.code == code && e.signal == signal), "{info:?}");
        ensure!(info.labels.get("ptyd.exec").map(String::as_str) == Some("1"), "{info:?}");
    }
    Ok(())
}

#[tokio::test]
async fn exec_keeps_the_last_bytes_when_the_output_is_too_long() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    let mut req = exec_req("seq", &["1", "100000"]);
    req.max_output = Some(100);
    let (result, output) = client.exec(req).await?;
    let full = seq_output(100000);
    ensure!(result.code == Some(0), "{result:?}");
    ensure!(result.truncated, "{result:?}");
    ensure!(result.total_bytes == full.len() as u64, "{result:?}");
    ensure!(output.len() == 100, "{} bytes kept", output.len());
    ensure!(
        output == full.as_bytes()[full.len() - 100..],
        "not the last bytes: {:?}",
        String::from_utf8_lossy(&output)
    );
    Ok(())
}

#[tokio::test]
async fn exec_timeout_ends_the_whole_process_group() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    // Two sleeps with the same unique command line, one in the background; the shell's
    // own command line contains it too.
    let needle = format!("sleep 30.{}", unique());
    let mut req = exec_req("sh", &["-c", &format!("{needle} & {needle}; wait")]);
    req.timeout_ms = Some(300);
    let started = Instant::now();
    let (exec, seen) = tokio::join!(client.exec(req), async {
        // Proves the needle finds the processes, so their absence later means something.
        wait_until_async(TIMEOUT, || pids_with_cmdline(&needle).len() >= 3).await
    });
    let (result, _) = exec?;
    ensure!(seen, "the shell and its two sleeps never showed up in /proc");
    ensure!(result.timed_out, "{result:?}");
    ensure!(result.code.is_none() && result.signal == Some(1), "SIGHUP ends it: {result:?}");
    ensure!(result.duration_ms >= 300, "{result:?}");
    ensure!(started.elapsed() < TIMEOUT, "took {:?}", started.elapsed());

    let gone = wait_until_async(TIMEOUT, || pids_with_cmdline(&needle).is_empty()).await;
    ensure!(gone, "still running: {:?}", pids_with_cmdline(&needle));
    let reaped = wait_until_async(TIMEOUT, || zombie_children(daemon.pid()).is_empty()).await;
    ensure!(reaped, "zombies under ptyd: {:?}", zombie_children(daemon.pid()));
    ensure!(client.list().await?.active == 0, "the slot is free");
    Ok(())
}

#[tokio::test]
async fn exec_sessions_do_not_hold_a_slot_after_they_end() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().capacity(1)).await?;
    let client = daemon.try_client().await?;
    for round in 0..5 {
        let (result, output) = client
            .exec(exec_req("sh", &["-c", "echo in-slot"]))
            .await
            .with_context(|| format!("exec {round} with capacity 1"))?;
        ensure!(result.code == Some(0) && output == b"in-slot\r\n"[..], "{result:?} {output:?}");
    }
    let list = client.list().await?;
    ensure!(list.active == 0 && list.capacity == 1, "active {} of {}", list.active, list.capacity);
    // And a plain spawn gets the slot too.
    let s = spawn(&client, "true", &[]).await?;
    client.wait(s.session, Some(TIMEOUT)).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// lease and the idle timeout

#[tokio::test]
async fn a_leased_session_outlives_the_idle_timeout_until_released() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().idle_timeout("300ms")).await?;
    let client = daemon.try_client().await?;
    let leased = spawn(&client, "sleep", &["30"]).await?;
    client.lease(leased.session).await?;
    let unleased = spawn(&client, "sleep", &["30"]).await?;

    let status = client.wait(unleased.session, Some(TIMEOUT)).await?;
    ensure!(status.signal == Some(1), "the unleased session was not idle-killed: {status:?}");
    ensure!(!process_alive(unleased.pid), "pid {} survived", unleased.pid);
    // It died of idleness, having been idle no longer than the leased one.
    let info = client.info(leased.session).await?;
    ensure!(info.state == SessionState::Running, "the leased session was killed: {info:?}");
    ensure!(process_alive(leased.pid), "pid {} is gone", leased.pid);

    let released_at = Instant::now();
    client.release(leased.session).await?;
    let status = client.wait(leased.session, Some(TIMEOUT)).await?;
    ensure!(status.signal == Some(1), "not idle-killed after release: {status:?}");
    ensure!(!process_alive(leased.pid), "pid {} survived", leased.pid);
    let after = released_at.elapsed();
    ensure!(after >= Duration::from_millis(250), "killed {after:?} after the release");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// subscribe

#[tokio::test]
async fn events_follow_a_session_from_spawn_through_resize_to_exit() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let watcher = daemon.try_client().await?;
    let mut events = watcher.subscribe().await?;
    let client = daemon.try_client().await?;
    let s = spawn(&client, "sh", &["-c", "read x; exit 4"]).await?;
    client.resize(s.session, 100, 30).await?;
    client.input(s.session, &b"go\n"[..]).await?;

    let seen = events_until_exit(&mut events, s.session).await?;
    let kinds: Vec<_> = seen.iter().map(|e| e.event).collect();
    ensure!(
        kinds == [DaemonEventKind::Spawned, DaemonEventKind::Resized, DaemonEventKind::Exited],
        "{seen:?}"
    );
    ensure!(seen[0].pid == Some(s.pid) && seen[0].command.as_deref() == Some("sh"), "{seen:?}");
    ensure!((seen[1].cols, seen[1].rows) == (Some(100), Some(30)), "{seen:?}");
    ensure!(seen[2].exit.is_some_and(|e| e.code == Some(4) && e.signal.is_none()), "{seen:?}");
    ensure!(seen.windows(2).all(|w| w[0].at_ms <= w[1].at_ms), "times go forward: {seen:?}");
    Ok(())
}

#[tokio::test]
async fn events_report_an_idle_kill_before_the_exit() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().idle_timeout("200ms")).await?;
    let client = daemon.try_client().await?;
    let mut events = client.subscribe().await?;
    let s = spawn(&client, "sleep", &["30"]).await?;
    let seen = events_until_exit(&mut events, s.session).await?;
    let kinds: Vec<_> = seen.iter().map(|e| e.event).collect();
    ensure!(
        kinds == [DaemonEventKind::Spawned, DaemonEventKind::IdleKilled, DaemonEventKind::Exited],
        "{seen:?}"
    );
    ensure!(seen[2].exit.is_some_and(|e| e.signal == Some(1)), "{seen:?}");
    ensure!(seen[1].at_ms >= seen[0].at_ms + 200, "killed before its idle timeout: {seen:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// read

#[tokio::test]
async fn read_returns_slices_that_chain_and_counts_dropped_bytes() -> Result<()> {
    const TEXT: &str = "0123456789abcdefghijklmnopqrstuvwxyz";
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    let script = format!("printf {TEXT}; sleep 30");
    let s = spawn(&client, "sh", &["-c", &script]).await?;
    client.wait_for(s.session, "z", Some(0), Some(TIMEOUT)).await?;

    let (r, bytes) = client.read(s.session, Some(3), Some(5)).await?;
    ensure!(&bytes[..] == b"34567", "{bytes:?}");
    ensure!((r.offset, r.next, r.dropped, r.end) == (3, 8, 0, 36), "{r:?}");

    // `next` chains: 7-byte reads from 0 reassemble the output exactly.
    let (mut since, mut all) = (0, Vec::new());
    loop {
        let (r, bytes) = client.read(s.session, Some(since), Some(7)).await?;
        ensure!(r.offset == since && r.next == since + bytes.len() as u64, "{r:?}");
        ensure!(bytes.len() == 7 || r.next == r.end, "short read before the end: {r:?}");
        all.extend_from_slice(&bytes);
        if r.next == r.end {
            break;
        }
        since = r.next;
    }
    ensure!(all == TEXT.as_bytes(), "{:?}", String::from_utf8_lossy(&all));
    let (r, bytes) = client.read(s.session, Some(36), None).await?;
    ensure!(bytes.is_empty() && (r.offset, r.next) == (36, 36), "{r:?}");
    let (code, _) = daemon_error(client.read(s.session, Some(37), None).await)?;
    ensure!(code == ErrorCode::BadRequest);

    // A 16-byte replay window: reading from 0 skips (and counts) what left it.
    let mut req = SpawnRequest::new("sh", ["-c", &script]);
    req.replay_bytes = Some(16);
    let small = client.spawn(req).await?;
    client.wait_for(small.session, "z", Some(0), Some(TIMEOUT)).await?;
    let (r, bytes) = client.read(small.session, Some(0), None).await?;
    ensure!((r.offset, r.dropped, r.next, r.end) == (20, 20, 36, 36), "{r:?}");
    ensure!(bytes[..] == TEXT.as_bytes()[20..], "{bytes:?}");
    let (r, bytes) = client.read(small.session, Some(18), Some(4)).await?;
    ensure!(r.dropped == 2 && r.offset == 20, "{r:?}");
    ensure!(!bytes.is_empty() && TEXT.as_bytes()[20..].starts_with(&bytes), "{bytes:?}");
    // Without `since`: the window as it is, nothing counted as dropped.
    let (r, bytes) = client.read(small.session, None, None).await?;
    ensure!((r.offset, r.dropped) == (20, 0) && bytes.len() == 16, "{r:?}");
    // Exited sessions stay readable.
    client.kill(small.session, None).await?;
    client.wait(small.session, Some(TIMEOUT)).await?;
    let (r, bytes) = client.read(small.session, Some(30), None).await?;
    ensure!(&bytes[..] == b"uvwxyz" && r.end == 36, "{r:?} {bytes:?}");
    client.kill(s.session, None).await?;
    Ok(())
}

/// `wait_for` without `since` looks from the session's latest input on (from the start
/// before any), so a prompt or an answer printed before the call is found: 100 of 100,
/// with programs that answer at once.
#[tokio::test]
async fn wait_for_without_since_cannot_miss_a_fast_answer() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.client().await;
    for i in 0..100 {
        let s = client.spawn(SpawnRequest::new("sh", ["-c", "printf 'ready> '; exec cat"])).await?;
        // Let the prompt land before asking: the old "from now on" default missed it.
        client.wait_for(s.session, "ready> ", Some(0), Some(TIMEOUT)).await?;
        let m = client.wait_for(s.session, "ready> ", None, Some(TIMEOUT)).await;
        ensure!(m.as_ref().is_ok_and(|m| m.offset == 0), "spawn {i}: {m:?}");
        client.kill(s.session, None).await?;
        client.wait(s.session, Some(TIMEOUT)).await?;
    }
    let script = "while read -r line; do echo \"got:$line\"; done";
    let s = client.spawn(SpawnRequest::new("sh", ["-c", script])).await?;
    for i in 0..100 {
        let sent = client.submit(s.session, &format!("ping{i}")).await?;
        let mark = sent.offset.context("the daemon reports the submit's offset")?;
        let m = client.wait_for(s.session, r"got:ping(\d+)", None, Some(TIMEOUT)).await?;
        ensure!(m.groups == [Some(i.to_string())], "submit {i}: {m:?}");
        ensure!(m.offset >= mark, "submit {i}: matched at {} before the mark {mark}", m.offset);
    }
    client.kill(s.session, None).await?;
    Ok(())
}
