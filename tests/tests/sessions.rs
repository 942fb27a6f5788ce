//! Driving sessions: input and output, exit statuses, resize, replay by offset, and the
//! errors the spec names.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ipc_proto::{EndReason, ErrorCode, SessionEvent, SessionId, SpawnRequest};
use ptyd_tests::{read_to_exit, read_until, Daemon, DaemonOptions, TIMEOUT};

#[tokio::test]
async fn bash_echoes_what_it_is_sent() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.client().await;
    let spawned = client.spawn(SpawnRequest::new("bash", ["--norc", "--noprofile", "-i"])).await?;
    let mut att = client.attach(spawned.session, None, false).await?;
    client.input(spawned.session, &b"echo h''i\n"[..]).await?;
    // The quotes keep the echoed command line itself from matching.
    read_until(&mut att, regex::Regex::new(r"[\r\n]hi\r\n")?, TIMEOUT).await?;
    client.input(spawned.session, &b"exit 7\n"[..]).await?;
    let got = read_to_exit(&mut att, TIMEOUT).await?;
    ensure!(got.exit.and_then(|s| s.code) == Some(7), "{:?}", got.exit);
    Ok(())
}

#[tokio::test]
async fn exit_codes_and_signals_round_trip_through_wait() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.client().await;
    for (script, code, signal) in [
        ("exit 0", Some(0), None),
        ("exit 1", Some(1), None),
        ("exit 3", Some(3), None),
        ("kill -TERM $$", None, Some(15)),
    ] {
        let spawned = client.spawn(SpawnRequest::new("sh", ["-c", script])).await?;
        let status = client.wait(spawned.session, Some(TIMEOUT)).await?;
        ensure!(status.code == code && status.signal == signal, "{script}: {status:?}");
        // wait after the exit still answers (retention).
        let again = client.wait(spawned.session, Some(TIMEOUT)).await?;
        ensure!(again == status, "{script}: second wait {again:?}");
    }
    Ok(())
}

#[tokio::test]
async fn exit_codes_round_trip_through_ptyctl_exec() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    for (script, expected) in
        [("echo out; exit 0", 0), ("exit 1", 1), ("exit 3", 3), ("kill -KILL $$", 137)]
    {
        let out = daemon.ptyctl(["exec", "--", "sh", "-c", script]).output()?;
        ensure!(
            out.status.code() == Some(expected),
            "{script}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        if script.starts_with("echo") {
            ensure!(String::from_utf8_lossy(&out.stdout).contains("out"), "exec streams output");
        }
    }
    Ok(())
}

#[tokio::test]
async fn resize_reaches_the_terminal() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.client().await;
    let spawned = client.spawn(SpawnRequest::new("bash", ["--norc", "--noprofile", "-i"])).await?;
    let mut att = client.attach(spawned.session, None, false).await?;
    client.resize(spawned.session, 132, 43).await?;
    client.input(spawned.session, &b"stty size\n"[..]).await?;
    read_until(&mut att, "43 132", TIMEOUT).await?;
    let info = client.info(spawned.session).await?;
    ensure!((info.cols, info.rows) == (132, 43), "{info:?}");
    let err = client.resize(spawned.session, 0, 10).await.unwrap_err();
    ensure!(err.code() == Some(ErrorCode::BadRequest), "{err}");
    Ok(())
}

#[tokio::test]
async fn attach_since_resumes_exactly_and_counts_dropped_bytes() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.client().await;
    let mut req = SpawnRequest::new("sh", ["-c", "printf 0123456789; printf abcdefghij; sleep 30"]);
    req.replay_bytes = Some(16);
    let spawned = client.spawn(req).await?;
    let sid = spawned.session;
    let mut first = client.attach(sid, Some(0), false).await?;
    read_until(&mut first, "j", TIMEOUT).await?;

    // Inside the window: exactly the bytes after offset 12.
    let mut att = client.attach(sid, Some(12), false).await?;
    ensure!((att.reply.offset, att.reply.dropped, att.reply.end) == (12, 0, 20), "{:?}", att.reply);
    let bytes = next_output(&mut att).await?;
    ensure!(bytes == b"cdefghij", "{:?}", String::from_utf8_lossy(&bytes));

    // Older than the window (16 bytes of 20): 4 dropped, replay from offset 4.
    let mut att = client.attach(sid, Some(0), false).await?;
    ensure!((att.reply.offset, att.reply.dropped) == (4, 4), "{:?}", att.reply);
    let bytes = next_output(&mut att).await?;
    ensure!(bytes == b"456789abcdefghij", "{:?}", String::from_utf8_lossy(&bytes));

    // Past the end is an error, not a silent empty replay.
    let err = client.attach(sid, Some(99), false).await.unwrap_err();
    ensure!(err.code() == Some(ErrorCode::BadRequest), "{err}");

    // Live output after a resume continues at the right offset.
    client.input(sid, &b"x"[..]).await?;
    let att = client.attach(sid, Some(20), false).await?;
    ensure!(att.reply.offset == 20, "{:?}", att.reply);
    client.kill(sid, None).await?;
    Ok(())
}

async fn next_output(att: &mut ipc_proto::Attachment) -> Result<Vec<u8>> {
    let ev = tokio::time::timeout(TIMEOUT, att.next()).await?.context("attachment ended")?;
    match ev {
        SessionEvent::Output { data, .. } => Ok(data.to_vec()),
        other => anyhow::bail!("expected output, got {other:?}"),
    }
}

#[tokio::test]
async fn several_clients_see_the_same_output() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let (a, b) = (daemon.client().await, daemon.client().await);
    let spawned = a.spawn(SpawnRequest::new("cat", Vec::<String>::new())).await?;
    let mut att_a = a.attach(spawned.session, None, false).await?;
    let mut att_b = b.attach(spawned.session, None, true).await?;
    b.input(spawned.session, &b"shared line\n"[..]).await?;
    read_until(&mut att_a, "shared line", TIMEOUT).await?;
    read_until(&mut att_b, "shared line", TIMEOUT).await?;
    ensure!(a.info(spawned.session).await?.attached == 2);
    Ok(())
}

#[tokio::test]
async fn capacity_is_enforced_and_freed() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().capacity(2)).await?;
    let client = daemon.client().await;
    let first = client.spawn(SpawnRequest::new("sleep", ["30"])).await?;
    client.spawn(SpawnRequest::new("sleep", ["30"])).await?;
    let err = client.spawn(SpawnRequest::new("sleep", ["30"])).await.unwrap_err();
    ensure!(err.code() == Some(ErrorCode::AtCapacity), "{err:?}");
    ensure!(err.to_string() == "pty pool is at capacity (2)", "{err}");
    ensure!(daemon.log().contains("pool is at capacity"), "capacity refusals are logged");

    client.kill(first.session, None).await?;
    client.wait(first.session, Some(TIMEOUT)).await?;
    client
        .spawn(SpawnRequest::new("true", Vec::<String>::new()))
        .await
        .context("a slot was freed")?;
    Ok(())
}

#[tokio::test]
async fn unknown_ids_and_spawn_failures_say_what_went_wrong() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.client().await;
    let ghost = SessionId::new();
    for err in [
        client.info(ghost).await.unwrap_err(),
        client.kill(ghost, None).await.unwrap_err(),
        client.wait(ghost, None).await.unwrap_err(),
        client.attach(ghost, None, false).await.unwrap_err(),
        client.input(ghost, &b"x"[..]).await.unwrap_err(),
    ] {
        ensure!(err.code() == Some(ErrorCode::HandleNotFound), "{err:?}");
        ensure!(err.to_string() == format!("pty handle not found: {ghost}"), "{err}");
    }

    let err = client
        .spawn(SpawnRequest::new("no-such-command-xyz", Vec::<String>::new()))
        .await
        .unwrap_err();
    ensure!(err.code() == Some(ErrorCode::SpawnFailed), "{err:?}");
    ensure!(
        err.to_string() == "pty spawn failed: no-such-command-xyz: command not found in PATH",
        "{err}"
    );

    let mut req = SpawnRequest::new("ls", Vec::<String>::new());
    req.cwd = Some("/no/such/dir".into());
    let err = client.spawn(req).await.unwrap_err();
    ensure!(err.code() == Some(ErrorCode::SpawnFailed), "{err:?}");
    ensure!(
        err.to_string().starts_with("pty spawn failed: cwd /no/such/dir: No such file"),
        "{err}"
    );

    let plain = daemon.dir().join("not-executable");
    std::fs::write(&plain, "echo never")?;
    let err = client
        .spawn(SpawnRequest::new(plain.display().to_string(), Vec::<String>::new()))
        .await
        .unwrap_err();
    ensure!(err.to_string().contains("not executable"), "{err}");
    ensure!(client.list().await?.active == 0, "failed spawns hold no slot");
    Ok(())
}

#[tokio::test]
async fn exhausted_descriptors_are_a_spawn_failure_not_a_crash() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().capacity(64)).await?;
    let client = daemon.client().await;
    // A low fd limit runs the daemon out of descriptors long before its capacity.
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &daemon.pid().to_string(), "--nofile=40:40"])
        .status()?;
    ensure!(limited.success(), "prlimit failed: {limited:?}");
    let mut failure = None;
    for _ in 0..40 {
        match client.spawn(SpawnRequest::new("sleep", ["30"])).await {
            Ok(_) => {}
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let err = failure.context("expected a spawn to fail with fds exhausted")?;
    ensure!(err.code() == Some(ErrorCode::SpawnFailed), "{err:?}");
    ensure!(err.to_string().contains("Too many open files"), "{err}");
    // The daemon still serves.
    tokio::time::timeout(Duration::from_secs(5), client.list()).await??;
    Ok(())
}

/// ptyctl names each failure as RUNBOOK.md does, then says what happened.
#[tokio::test]
async fn ptyctl_names_the_error_on_stderr() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().capacity(1)).await?;
    let stderr_of = |args: &[&str]| -> Result<(Option<i32>, String)> {
        let out = daemon.ptyctl(args).output()?;
        Ok((out.status.code(), String::from_utf8_lossy(&out.stderr).trim().to_string()))
    };
    stderr_of(&["spawn", "--", "sleep", "30"])?;
    let full = stderr_of(&["spawn", "--", "sleep", "30"])?;
    ensure!(
        full == (Some(5), "ptyctl: AtCapacity: pty pool is at capacity (1)".into()),
        "{full:?}"
    );
    let ghost = SessionId::new();
    let unknown = stderr_of(&["info", &ghost.to_string()])?;
    let expected = format!("ptyctl: HandleNotFound: pty handle not found: {ghost}");
    ensure!(unknown == (Some(4), expected), "{unknown:?}");
    let gone = daemon.dir().join("nobody-here.sock");
    let out = std::process::Command::new(ptyd_tests::ptyctl_bin()?)
        .args(["--socket", gone.to_str().unwrap_or_default(), "ls"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stderr);
    ensure!(text.starts_with("ptyctl: IpcError: cannot connect to ptyd at"), "{text}");
    ensure!(out.status.code() == Some(125), "{out:?}");
    Ok(())
}

/// `info` says why each session ended, on the wire and in ptyctl's words.
#[tokio::test]
async fn every_ended_session_says_why() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().args(["--idle-timeout", "300ms"])).await?;
    let client = daemon.client().await;
    let watcher = daemon.client().await;
    let mut events = watcher.subscribe().await?;
    let no_idle = |mut req: SpawnRequest| {
        req.idle_timeout_ms = Some(0);
        req
    };
    let exited = client.spawn(no_idle(SpawnRequest::new("true", Vec::<String>::new()))).await?;
    let killed = client.spawn(no_idle(SpawnRequest::new("sleep", ["100"]))).await?;
    let idle = client.spawn(SpawnRequest::new("sleep", ["100"])).await?;
    let running = client.info(killed.session).await?;
    ensure!(running.end_reason.is_none(), "a running session has no end reason: {running:?}");
    client.kill(killed.session, None).await?;
    for (s, want, words) in [
        (exited.session, EndReason::Exited, "the program exiting"),
        (killed.session, EndReason::Killed, "a kill request"),
        (idle.session, EndReason::IdleTimeout, "the idle timeout (after 300ms)"),
    ] {
        client.wait(s, Some(TIMEOUT)).await?;
        let info = client.info(s).await?;
        ensure!(info.end_reason == Some(want), "{want:?}: {info:?}");
        let out = daemon.ptyctl(["info", &s.to_string()]).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.starts_with("ended by:")).unwrap_or_default();
        ensure!(line.ends_with(words), "{want:?}: {text}");
    }
    // The `exited` events say it too.
    let mut reasons = std::collections::HashMap::new();
    while reasons.len() < 3 {
        let notice = tokio::time::timeout(TIMEOUT, events.recv()).await?.context("feed closed")?;
        if let ipc_proto::Notice::Event(ev) = notice {
            if ev.event == ipc_proto::DaemonEventKind::Exited {
                reasons.insert(ev.session, ev.end_reason);
            }
        }
    }
    for (s, want) in [
        (exited.session, EndReason::Exited),
        (killed.session, EndReason::Killed),
        (idle.session, EndReason::IdleTimeout),
    ] {
        ensure!(reasons.get(&s) == Some(&Some(want)), "{want:?}: {reasons:?}");
    }
    Ok(())
}

#[tokio::test]
async fn input_from_two_clients_arrives_whole_and_each_in_order() -> Result<()> {
    // Chunks far larger than the terminal takes at once, so most of each waits in the
    // session's input queue while the other client sends too.
    const CHUNK: usize = 16 * 1024;
    const EACH: usize = 24;
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let (a, b) = (daemon.client().await, daemon.client().await);
    let script = "stty raw -echo; echo ready; exec cat";
    let s = a.spawn(SpawnRequest::new("sh", ["-c", script])).await?.session;
    let mut att = a.attach(s, Some(0), true).await?;
    // Nothing follows "ready" until input comes: cat prints only what it reads.
    read_until(&mut att, "ready\n", TIMEOUT).await?;
    let chunk = |who: u8, i: usize| {
        let mut c = format!("<{}{i:03}>", who as char).into_bytes();
        c.resize(CHUNK, who);
        c
    };
    let send = |client: &ipc_proto::Client, who: u8| {
        let client = client.clone();
        async move {
            for i in 0..EACH {
                client.input(s, chunk(who, i)).await?;
            }
            anyhow::Ok(())
        }
    };
    // Read while sending: cat echoes, and a reader that waited would hold it back.
    let read = async {
        let mut got = Vec::new();
        while got.len() < 2 * EACH * CHUNK {
            got.extend(next_output(&mut att).await?);
        }
        anyhow::Ok(got)
    };
    let (sent_a, sent_b, got) = tokio::join!(send(&a, b'a'), send(&b, b'b'), read);
    sent_a?;
    sent_b?;
    let got = got?;
    let mut next = [0usize; 2];
    for piece in got.chunks(CHUNK) {
        let who = piece[1];
        let k = usize::from(who == b'b');
        ensure!(
            piece == chunk(who, next[k]),
            "chunk {next:?} of {} is cut or out of order",
            who as char
        );
        next[k] += 1;
    }
    ensure!(next == [EACH, EACH], "{next:?}");
    Ok(())
}

#[tokio::test]
async fn input_a_program_does_not_read_waits_without_holding_up_the_connection() -> Result<()> {
    gated_input(Writer::Stays).await
}

#[tokio::test]
async fn input_sent_is_written_even_after_its_client_left() -> Result<()> {
    gated_input(Writer::Leaves).await
}

/// Whether the client that sent the input waits for its answers or leaves first.
#[derive(PartialEq)]
enum Writer {
    Stays,
    Leaves,
}

/// 40 writes of 4 KiB to a program that reads nothing until a FIFO opens (the terminal's
/// buffer takes one, the session's queue 16, the rest wait), a list answered on the same
/// connection meanwhile, then every byte echoed whole and in the order sent.
async fn gated_input(writer: Writer) -> Result<()> {
    const CHUNK: usize = 4096;
    const COUNT: usize = 40;
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.client().await;
    let gate = daemon.dir().join("gate");
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
    // The program reads nothing from its terminal until the gate opens, then echoes it.
    let script = format!("stty raw -echo; echo ready; read -r _ < {}; exec cat", gate.display());
    let s = client.spawn(SpawnRequest::new("sh", ["-c", &script])).await?.session;
    let mut att = client.attach(s, Some(0), true).await?;
    read_until(&mut att, "ready\n", TIMEOUT).await?;
    let chunk = |i: usize| {
        let mut c = format!("<{i:03}>").into_bytes();
        c.resize(CHUNK, b'a' + (i % 26) as u8);
        c
    };
    let sender = daemon.client().await;
    let inputs = (0..COUNT).map(|i| {
        let (sender, data) = (sender.clone(), chunk(i));
        async move { sender.input(s, data).await }
    });
    let mut inputs = futures::future::join_all(inputs);
    // Polled once, so every input goes out before the list.
    ensure!(futures::poll!(&mut inputs).is_pending(), "all written with nobody reading");
    let list = tokio::time::timeout(TIMEOUT, sender.list()).await;
    let list = list.context("the list waited behind input that nobody reads")??;
    ensure!(list.sessions.len() == 1, "{:?}", list.sessions);
    let answers = match writer {
        Writer::Stays => Some(inputs),
        // Its connection closes with most of the input still waiting.
        Writer::Leaves => {
            drop((inputs, sender));
            None
        }
    };
    // Open the gate: everything arrives, whole and in the order sent.
    let open = tokio::task::spawn_blocking(move || std::fs::write(gate, b"go\n"));
    let mut got = Vec::new();
    while got.len() < COUNT * CHUNK {
        got.extend(next_output(&mut att).await?);
    }
    open.await??;
    if let Some(inputs) = answers {
        for r in tokio::time::timeout(TIMEOUT, inputs).await.context("inputs not answered")? {
            r?;
        }
    }
    let want: Vec<u8> = (0..COUNT).flat_map(chunk).collect();
    ensure!(got == want, "the input arrived out of order or cut");
    client.kill(s, None).await?;
    Ok(())
}
