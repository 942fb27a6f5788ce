//! Broken clients, written byte by byte with `RawConn`: each gets the error the spec
//! names, and the connection is closed when the stream can no longer be trusted (bad
//! framing, a failed handshake) but kept when only one request was wrong. Meanwhile a
//! well-behaved client, connected before the bad ones, keeps being served.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use ipc_proto::{Attachment, Client, SessionId, SessionState, SpawnRequest, PROTOCOL_VERSION};
use ptyd_tests::{
    frame_bytes, process_alive, read_until, Daemon, DaemonOptions, RawConn, RawFrame, TIMEOUT,
};
use serde_json::json;

/// A client connected before any bad one, attached to a running `cat`.
struct Witness {
    client: Client,
    session: SessionId,
    att: Attachment,
    round: u32,
}

impl Witness {
    async fn start(daemon: &Daemon) -> Result<Witness> {
        let client = daemon.try_client().await?;
        let spawned = client.spawn(SpawnRequest::new("cat", Vec::<String>::new())).await?;
        let att = client.attach(spawned.session, None, false).await?;
        let mut witness = Witness { client, session: spawned.session, att, round: 0 };
        witness.check("at the start").await?;
        Ok(witness)
    }

    /// The witness can still list, and its session still echoes what it is sent.
    async fn check(&mut self, after: &str) -> Result<()> {
        self.round += 1;
        let list = tokio::time::timeout(Duration::from_secs(5), self.client.list())
            .await
            .with_context(|| format!("list hung {after}"))?
            .with_context(|| format!("list failed {after}"))?;
        let mine = list.sessions.iter().find(|s| s.session == self.session);
        ensure!(
            mine.is_some_and(|s| s.state == SessionState::Running),
            "the witness session is not listed as running {after}: {list:?}"
        );
        let marker = format!("witness-ping-{}", self.round);
        self.client
            .input(self.session, format!("{marker}\n").into_bytes())
            .await
            .with_context(|| format!("input failed {after}"))?;
        read_until(&mut self.att, marker.as_str(), TIMEOUT)
            .await
            .with_context(|| format!("the witness session did not echo {after}"))?;
        Ok(())
    }
}

/// Expects exactly one `error` frame with `code` before the daemon closes the
/// connection; returns its message.
async fn expect_error_then_close(conn: &mut RawConn, code: &str, what: &str) -> Result<String> {
    let frames = conn
        .expect_closed(TIMEOUT)
        .await
        .with_context(|| format!("{what}: the daemon should close the connection"))?;
    let [frame] = frames.as_slice() else {
        bail!("{what}: expected exactly one error frame before the close, got {frames:?}");
    };
    ensure!(
        frame.error_code() == Some(code),
        "{what}: expected a {code} error, got {}",
        frame.header
    );
    ensure!(frame.id() == 0, "{what}: a connection-level error carries no id: {}", frame.header);
    Ok(frame.error_message().unwrap_or_default().to_string())
}

/// Expects an `error` reply with `code` to request `id`, on a connection that stays open.
fn expect_request_error(reply: &RawFrame, code: &str, what: &str) -> Result<String> {
    ensure!(
        reply.error_code() == Some(code),
        "{what}: expected a {code} error, got {}",
        reply.header
    );
    Ok(reply.error_message().unwrap_or_default().to_string())
}

/// A `list` on `conn` is answered normally, so the connection is still in service.
async fn expect_list_works(conn: &mut RawConn, what: &str) -> Result<()> {
    let reply = conn
        .request(json!({"type": "list"}))
        .await
        .with_context(|| format!("{what}: the connection should stay open"))?;
    ensure!(reply.kind() == "sessions", "{what}: list answered with {}", reply.header);
    Ok(())
}

fn ensure_daemon_alive(daemon: &mut Daemon) -> Result<()> {
    ensure!(
        daemon.try_wait()?.is_none() && process_alive(daemon.pid()),
        "ptyd died: {:?}",
        daemon.try_wait()?
    );
    Ok(())
}

#[tokio::test]
async fn a_header_that_is_not_json_is_malformed_and_closes() -> Result<()> {
    let mut daemon = Daemon::start(DaemonOptions::new()).await?;
    let mut witness = Witness::start(&daemon).await?;

    // After the handshake: a sound length prefix around a header that is not JSON.
    let mut conn = RawConn::connect_hello(daemon.socket()).await?;
    conn.send_raw(&frame_bytes(b"this is {not json", b"")).await?;
    let message = expect_error_then_close(&mut conn, "MalformedFrame", "non-JSON header").await?;
    ensure!(
        message.starts_with("malformed frame: invalid header") && message.contains("JSON"),
        "the message should say the header is not JSON: {message:?}"
    );
    witness.check("after a non-JSON header").await?;

    // As the very first frame, instead of hello.
    let mut conn = RawConn::connect(daemon.socket()).await?;
    conn.send_raw(&frame_bytes(b"\x00\xffgarbage", b"")).await?;
    let message =
        expect_error_then_close(&mut conn, "MalformedFrame", "non-JSON first frame").await?;
    ensure!(message.starts_with("malformed frame:"), "{message:?}");
    witness.check("after a non-JSON first frame").await?;

    // A header length that points past the end of its frame.
    let mut conn = RawConn::connect_hello(daemon.socket()).await?;
    let mut bad = 6u32.to_be_bytes().to_vec();
    bad.extend_from_slice(&100u32.to_be_bytes());
    bad.extend_from_slice(b"{}");
    conn.send_raw(&bad).await?;
    let message =
        expect_error_then_close(&mut conn, "MalformedFrame", "header length past the frame")
            .await?;
    ensure!(
        message.contains("header length 100 exceeds the 2 bytes left in the frame"),
        "{message:?}"
    );
    witness.check("after a header length past its frame").await?;

    ensure_daemon_alive(&mut daemon)?;
    Ok(())
}

#[tokio::test]
async fn an_oversized_length_prefix_is_refused_with_both_sizes() -> Result<()> {
    let mut daemon = Daemon::start(DaemonOptions::new()).await?;
    let mut witness = Witness::start(&daemon).await?;
    let expected =
        format!("frame of 2000000 bytes exceeds the {}-byte limit", ipc_proto::MAX_FRAME_LEN);

    // Only the prefix and a few bytes are sent: the refusal must not wait for the
    // announced 2 MB to arrive.
    let mut conn = RawConn::connect_hello(daemon.socket()).await?;
    let mut bytes = 2_000_000u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&2u32.to_be_bytes());
    bytes.extend_from_slice(b"{}");
    conn.send_raw(&bytes).await?;
    let message = expect_error_then_close(&mut conn, "FrameTooLarge", "oversized frame").await?;
    ensure!(message.contains(&expected), "expected {expected:?} in {message:?}");
    ensure!(message.contains("2000000") && message.contains("1048576"), "{message:?}");
    witness.check("after an oversized frame").await?;

    // The same as the very first frame.
    let mut conn = RawConn::connect(daemon.socket()).await?;
    conn.send_raw(&2_000_000u32.to_be_bytes()).await?;
    let message =
        expect_error_then_close(&mut conn, "FrameTooLarge", "oversized first frame").await?;
    ensure!(message.contains(&expected), "expected {expected:?} in {message:?}");
    witness.check("after an oversized first frame").await?;

    ensure_daemon_alive(&mut daemon)?;
    Ok(())
}

#[tokio::test]
async fn a_wrong_protocol_version_names_both_versions_and_closes() -> Result<()> {
    let mut daemon = Daemon::start(DaemonOptions::new()).await?;
    let mut witness = Witness::start(&daemon).await?;

    let mut conn = RawConn::connect(daemon.socket()).await?;
    conn.send_json(
        &json!({"id": 1, "type": "hello", "protocol_version": 999, "client": "raw"}),
        b"",
    )
    .await?;
    let message = expect_error_then_close(&mut conn, "VersionMismatch", "hello v999").await?;
    let expected = format!(
        "unsupported protocol version 999: this daemon speaks versions 1 to {PROTOCOL_VERSION}"
    );
    ensure!(message == expected, "expected {expected:?}, got {message:?}");
    witness.check("after a version mismatch").await?;

    ensure_daemon_alive(&mut daemon)?;
    Ok(())
}

#[tokio::test]
async fn a_request_before_hello_is_refused_and_closes() -> Result<()> {
    let mut daemon = Daemon::start(DaemonOptions::new()).await?;
    let mut witness = Witness::start(&daemon).await?;

    let mut conn = RawConn::connect(daemon.socket()).await?;
    conn.send_json(&json!({"id": 1, "type": "list"}), b"").await?;
    let message = expect_error_then_close(&mut conn, "BadRequest", "list before hello").await?;
    ensure!(message == "the first request must be hello", "{message:?}");
    witness.check("after a request before hello").await?;

    // A spawn before hello must not start anything either.
    let mut conn = RawConn::connect(daemon.socket()).await?;
    conn.send_json(&json!({"id": 1, "type": "spawn", "command": "sleep", "args": ["31"]}), b"")
        .await?;
    let message = expect_error_then_close(&mut conn, "BadRequest", "spawn before hello").await?;
    ensure!(message == "the first request must be hello", "{message:?}");
    let list = witness.client.list().await?;
    ensure!(list.sessions.len() == 1, "a spawn before hello started a session: {list:?}");
    witness.check("after a spawn before hello").await?;

    ensure_daemon_alive(&mut daemon)?;
    Ok(())
}

#[tokio::test]
async fn a_bad_field_is_a_bad_request_with_the_id_and_the_connection_stays() -> Result<()> {
    let mut daemon = Daemon::start(DaemonOptions::new()).await?;
    let mut witness = Witness::start(&daemon).await?;

    let mut conn = RawConn::connect_hello(daemon.socket()).await?;
    let session = witness.session.to_string();
    let reply = conn
        .request(json!({"type": "resize", "session": session, "cols": "wide", "rows": 24}))
        .await?;
    ensure!(reply.id() == 2, "the error must echo the request id 2: {}", reply.header);
    let message = expect_request_error(&reply, "BadRequest", "resize cols=\"wide\"")?;
    ensure!(message.starts_with("invalid request:"), "{message:?}");
    expect_list_works(&mut conn, "after a bad field").await?;

    // A missing required field is the same kind of mistake.
    let reply = conn.request(json!({"type": "kill"})).await?;
    ensure!(reply.id() == 4, "{}", reply.header);
    let message = expect_request_error(&reply, "BadRequest", "kill without a session")?;
    ensure!(message.contains("session"), "the message should name the field: {message:?}");
    expect_list_works(&mut conn, "after a missing field").await?;

    // The bad resize changed nothing.
    let info = witness.client.info(witness.session).await?;
    ensure!((info.cols, info.rows) == (80, 24), "the bad resize was applied: {info:?}");
    witness.check("after requests with bad fields").await?;

    ensure_daemon_alive(&mut daemon)?;
    Ok(())
}

#[tokio::test]
async fn an_unknown_request_type_is_answered_and_the_connection_stays() -> Result<()> {
    let mut daemon = Daemon::start(DaemonOptions::new()).await?;
    let mut witness = Witness::start(&daemon).await?;

    let mut conn = RawConn::connect_hello(daemon.socket()).await?;
    let reply = conn.request(json!({"type": "teleport", "to": "mars"})).await?;
    ensure!(reply.id() == 2, "the error must echo the request id 2: {}", reply.header);
    let message = expect_request_error(&reply, "UnknownRequest", "type teleport")?;
    ensure!(
        message == format!("unknown request type (this daemon speaks protocol {PROTOCOL_VERSION})"),
        "{message:?}"
    );
    expect_list_works(&mut conn, "after an unknown type").await?;
    witness.check("after an unknown request type").await?;

    // The connection really is still usable for sessions too.
    let reply =
        conn.request(json!({"type": "info", "session": witness.session.to_string()})).await?;
    ensure!(reply.kind() == "session", "info answered with {}", reply.header);

    ensure_daemon_alive(&mut daemon)?;
    Ok(())
}

/// A version 1 client is still served, with version 1's meaning of `wait_for` without
/// `since` (output after the call only); a version 2 client on the same session finds
/// the earlier output from the input mark.
#[tokio::test]
async fn a_version_1_client_keeps_its_wait_for_default() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let mut v1 = RawConn::connect(daemon.socket()).await?;
    let hello = v1.request(json!({"type": "hello", "protocol_version": 1, "client": "v1"})).await?;
    ensure!(hello.kind() == "hello" && hello.header["protocol_version"] == 1, "{}", hello.header);
    let spawned = v1
        .request(json!({"type": "spawn", "command": "sh", "args": ["-c", "echo early; exec cat"]}))
        .await?;
    let session = spawned.header["session"].clone();
    let early = json!({"type": "wait_for", "session": session, "pattern": "early", "since": 0});
    ensure!(v1.request(early).await?.kind() == "matched", "the output never came");
    let old =
        json!({"type": "wait_for", "session": session, "pattern": "early", "timeout_ms": 300});
    let reply = v1.request(old).await?;
    ensure!(
        reply.error_code() == Some("Timeout"),
        "version 1 matched old output: {}",
        reply.header
    );
    let client = daemon.client().await;
    let id: SessionId = serde_json::from_value(session)?;
    let m = client.wait_for(id, "early", None, Some(TIMEOUT)).await?;
    ensure!(m.offset == 0, "{m:?}");
    Ok(())
}
