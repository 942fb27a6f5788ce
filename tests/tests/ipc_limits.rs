//! The IPC side of "bad input gets a clear error and costs bounded memory": a request
//! without an id is refused but the connection stays, `type` must be a name (the enum's
//! order is not wire format), NUL bytes in spawn fields are BadRequest naming the field,
//! connections idle after `hello` and half-sent frames are cut off, and the bytes all
//! unfinished frames may hold are capped. Exited sessions are retained by size too.

use anyhow::{ensure, Context, Result};
use ipc_proto::{ClientError, ErrorCode, SpawnRequest};
use ptyd_tests::{Daemon, DaemonOptions, RawConn, TIMEOUT};
use serde_json::json;

#[tokio::test]
async fn a_request_without_an_id_is_refused_and_the_connection_stays() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let mut conn = RawConn::connect_hello(daemon.socket()).await?;
    for header in [json!({"type": "list"}), json!({"id": 0, "type": "list"})] {
        conn.send_json(&header, b"").await?;
        let reply = conn.recv(TIMEOUT).await?.context("no reply")?;
        ensure!(reply.error_code() == Some("BadRequest"), "{header}: {}", reply.header);
        ensure!(reply.id() == 0, "{}", reply.header);
        ensure!(
            reply.error_message() == Some("requests must carry a nonzero id"),
            "{}",
            reply.header
        );
    }
    let reply = conn.request(json!({"type": "list"})).await?;
    ensure!(reply.kind() == "sessions", "the connection still serves: {}", reply.header);
    Ok(())
}

#[tokio::test]
async fn a_numeric_type_is_not_a_message_name() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let mut conn = RawConn::connect_hello(daemon.socket()).await?;
    // 1 would be the second variant (spawn) if the enum's order were wire format.
    let reply = conn.request(json!({"type": 1, "command": "true"})).await?;
    ensure!(reply.error_code() == Some("BadRequest"), "{}", reply.header);
    let message = reply.error_message().unwrap_or_default();
    ensure!(message.contains("\"type\" must be a string"), "{message}");
    let list = daemon.try_client().await?.list().await?;
    ensure!(list.sessions.is_empty(), "a session was spawned: {list:?}");
    ensure!(conn.request(json!({"type": "list"})).await?.kind() == "sessions");
    Ok(())
}

#[tokio::test]
async fn nul_bytes_in_spawn_fields_are_bad_requests_naming_the_field() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    let mut env_req = SpawnRequest::new("sh", ["-c", "true"]);
    env_req.env.insert("GREETING".into(), "hi\0there".into());
    let mut cwd_req = SpawnRequest::new("true", Vec::<String>::new());
    cwd_req.cwd = Some("/tmp\0/x".into());
    for (req, field) in [
        (SpawnRequest::new("tr\0ue", Vec::<String>::new()), "command"),
        (SpawnRequest::new("echo", ["ok", "a\0b"]), "args[1]"),
        (env_req, "env[\"GREETING\"]"),
        (cwd_req, "cwd"),
    ] {
        match client.spawn(req).await {
            Err(ClientError::Daemon { code: ErrorCode::BadRequest, message }) => ensure!(
                message == format!("{field} contains a NUL byte, which exec cannot pass"),
                "{field}: {message}"
            ),
            other => anyhow::bail!("{field}: expected BadRequest, got {other:?}"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_connection_idle_after_hello_is_closed_but_one_holding_something_is_not() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().args(["--ipc-idle-timeout", "300ms"])).await?;
    let mut idle = RawConn::connect_hello(daemon.socket()).await?;
    let mut subscribed = RawConn::connect_hello(daemon.socket()).await?;
    ensure!(subscribed.request(json!({"type": "subscribe"})).await?.kind() == "ok");
    let frames = idle.expect_closed(TIMEOUT).await?;
    let [frame] = frames.as_slice() else { anyhow::bail!("expected one error: {frames:?}") };
    ensure!(frame.error_code() == Some("Timeout"), "{}", frame.header);
    ensure!(
        frame.error_message().unwrap_or_default().contains("ipc idle timeout"),
        "{}",
        frame.header
    );
    // A connection whose wait was answered holds nothing: it is closed too.
    let client = daemon.try_client().await?;
    let done = client.spawn(SpawnRequest::new("true", Vec::<String>::new())).await?;
    client.wait(done.session, Some(TIMEOUT)).await?;
    let mut waited = RawConn::connect_hello(daemon.socket()).await?;
    let reply =
        waited.request(json!({"type": "wait", "session": done.session.to_string()})).await?;
    ensure!(reply.kind() == "exited", "{}", reply.header);
    let frames = waited.expect_closed(TIMEOUT).await?;
    ensure!(frames.iter().any(|f| f.error_code() == Some("Timeout")), "{frames:?}");
    // The subscriber outlives several idle periods: it has the event feed open.
    let client = daemon.try_client().await?;
    client.spawn(SpawnRequest::new("true", Vec::<String>::new())).await?;
    let event = subscribed.recv(TIMEOUT).await?.context("no event")?;
    ensure!(event.kind() == "event", "{}", event.header);
    Ok(())
}

/// Announces a frame of 1 MiB of which only one byte ever comes.
async fn announce(conn: &mut RawConn) -> std::io::Result<()> {
    let mut bytes = (1024u32 * 1024 - 4).to_be_bytes().to_vec();
    bytes.push(0);
    conn.send_raw(&bytes).await
}

#[tokio::test]
async fn half_sent_frames_are_cut_off_and_their_bytes_are_capped() -> Result<()> {
    let opts = DaemonOptions::new().args([
        "--frame-timeout",
        "300ms",
        "--max-partial-frame-bytes",
        "3M",
        "--ipc-idle-timeout",
        "0",
    ]);
    let daemon = Daemon::start(opts).await?;
    let mut slow = RawConn::connect_hello(daemon.socket()).await?;
    announce(&mut slow).await?;
    let frames = slow.expect_closed(TIMEOUT).await?;
    let [frame] = frames.as_slice() else { anyhow::bail!("expected one error: {frames:?}") };
    ensure!(frame.error_code() == Some("Timeout"), "{}", frame.header);
    ensure!(
        frame.error_message().unwrap_or_default().contains("still unfinished"),
        "{}",
        frame.header
    );

    // A frame that would pass the budget by itself is refused at once.
    let daemon = Daemon::start(DaemonOptions::new().args([
        "--frame-timeout",
        "1h",
        "--max-partial-frame-bytes",
        "512K",
    ]))
    .await?;
    let mut big = RawConn::connect_hello(daemon.socket()).await?;
    announce(&mut big).await?;
    let frames = big.expect_closed(TIMEOUT).await?;
    let [frame] = frames.as_slice() else { anyhow::bail!("expected one error: {frames:?}") };
    ensure!(frame.error_code() == Some("MalformedFrame"), "{}", frame.header);
    let message = frame.error_message().unwrap_or_default();
    ensure!(message.contains("would hold more than 524288 bytes"), "{message}");
    // Frames within the budget, sent in pieces from two connections at once, complete and
    // give their share back: many more than the budget holds go through in turn.
    let payload = vec![b'x'; 200 * 1024];
    let session =
        daemon.try_client().await?.spawn(SpawnRequest::new("cat", Vec::<String>::new())).await?;
    let header = json!({"id": 1, "type": "input", "session": session.session.to_string()});
    let bytes = ptyd_tests::frame_bytes(header.to_string().as_bytes(), &payload);
    for round in 0..10 {
        let mut a = RawConn::connect_hello(daemon.socket()).await?;
        let mut b = RawConn::connect_hello(daemon.socket()).await?;
        let (head, tail) = bytes.split_at(bytes.len() / 2);
        a.send_raw(head).await?;
        b.send_raw(head).await?;
        a.send_raw(tail).await?;
        b.send_raw(tail).await?;
        for conn in [&mut a, &mut b] {
            let reply = conn.recv(TIMEOUT).await?.context("closed")?;
            ensure!(reply.kind() == "ok", "round {round}: {}", reply.header);
        }
    }
    Ok(())
}

#[tokio::test]
async fn exited_sessions_are_retained_within_a_byte_bound() -> Result<()> {
    // Each exited session keeps about 1 KiB of record plus its output window (4 KiB
    // requested below, filled by what it prints; a window holds only what came):
    // 20 KiB holds a handful, never all 30.
    let daemon = Daemon::start(DaemonOptions::new().args([
        "--max-retained-bytes",
        "20K",
        "--retention",
        "1h",
    ]))
    .await?;
    let client = daemon.try_client().await?;
    let mut ids = Vec::new();
    for _ in 0..30 {
        let req = SpawnRequest {
            replay_bytes: Some(4096),
            ..SpawnRequest::new("sh", ["-c", "yes | head -c 8192"])
        };
        let s = client.spawn(req).await?;
        client.wait(s.session, None).await?;
        ids.push(s.session);
    }
    let list = client.list().await?;
    let kept = list.sessions.len();
    ensure!((1..=5).contains(&kept), "{kept} exited sessions kept within 20 KiB");
    // The newest is there, the oldest is forgotten.
    client.info(*ids.last().context("ids")?).await?;
    match client.info(ids[0]).await {
        Err(ClientError::Daemon { code: ErrorCode::HandleNotFound, .. }) => Ok(()),
        other => anyhow::bail!("the oldest exited session is still retained: {other:?}"),
    }
}
