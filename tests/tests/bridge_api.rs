//! ptyd-bridge's HTTP and WebSocket surface against real ptyd and ptyd-bridge processes:
//! create/type/read, resize, errors (400, 404, 503), origins, tokens, control messages,
//! the message size cap, health and metrics, and starting ptyd when none answers.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ptyd_tests::bridge::{upgrade_status, Bridge, WsEvent};
use ptyd_tests::{Daemon, DaemonOptions, TIMEOUT};

#[tokio::test]
async fn create_type_and_read() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge = Bridge::start(daemon.socket(), &[]).await?;
    let r = bridge.post("/api/terminals", "").await?;
    ensure!(r.status == 201, "{} {}", r.status, r.body);
    let created = r.json()?;
    let id = created["id"].as_str().context("id")?.to_string();
    let ws_url = created["ws_url"].as_str().context("ws_url")?;
    ensure!(ws_url.ends_with(&format!("/ws/terminal/{id}")), "{ws_url}");
    ensure!(ws_url.starts_with("ws://"), "{ws_url}");

    let mut ws = bridge.connect(&id, None).await?;
    ensure!(ws.hello["id"] == id.as_str() && ws.hello["offset"] == 0, "{}", ws.hello);
    // The quotes keep the echoed command line itself from matching.
    ws.send_input(b"echo br''idge-ok\r").await?;
    ws.read_until("bridge-ok", TIMEOUT).await?;

    let info = bridge.get(&format!("/api/terminals/{id}")).await?.json()?;
    ensure!(info["status"] == "Active", "{info}");
    ensure!(info["pid"].as_u64().is_some_and(|p| p > 1), "{info}");
    ensure!(info["created_at_ms"].as_u64() <= info["last_activity_ms"].as_u64(), "{info}");
    // The session is ptyd's, labelled as the bridge's, with ptyd's idle timeout off.
    let client = daemon.client().await;
    let session = client.info(id.parse()?).await?;
    ensure!(session.labels.get("ptyd-bridge").map(String::as_str) == Some("terminal"));
    ensure!(session.idle_timeout_ms == 0, "{session:?}");
    ensure!(session.command == "/bin/sh" && session.args == ["-l"], "{session:?}");
    bridge
        .wait_for_log(&format!("WebSocket connection established for terminal {id}"), TIMEOUT)
        .await?;
    Ok(())
}

#[tokio::test]
async fn resize_changes_stty_size() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge = Bridge::start(daemon.socket(), &[]).await?;
    let id = bridge.create(r#"{"cols":90,"rows":20}"#).await?;
    let mut ws = bridge.connect(&id, None).await?;
    ws.send_input(b"stty size\r").await?;
    ws.read_until("20 90", TIMEOUT).await?;
    ws.send_text(r#"{"type":"resize","cols":100,"rows":30}"#).await?;
    ws.send_input(b"stty size\r").await?;
    ws.read_until("30 100", TIMEOUT).await?;
    Ok(())
}

#[tokio::test]
async fn malformed_ids_are_400_and_unknown_ones_404() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge = Bridge::start(daemon.socket(), &[]).await?;
    for (method, path) in [("GET", "/api/terminals/nope"), ("DELETE", "/api/terminals/12-34")] {
        let r = bridge.request(method, path, &[], None).await?;
        ensure!(r.status == 400 && r.json()?["error"] == "BadRequest", "{method} {path}: {r:?}");
    }
    let unknown = uuid::Uuid::new_v4();
    for method in ["GET", "DELETE"] {
        let r = bridge.request(method, &format!("/api/terminals/{unknown}"), &[], None).await?;
        ensure!(r.status == 404 && r.json()?["error"] == "NotFound", "{method}: {r:?}");
    }
    let e = bridge.upgrade("/ws/terminal/nope", &[]).await.err().context("upgrade worked")?;
    ensure!(upgrade_status(&e) == Some(400), "{e}");
    let e = bridge.upgrade(&format!("/ws/terminal/{unknown}"), &[]).await.err().context("ok")?;
    ensure!(upgrade_status(&e) == Some(404), "{e}");
    let r = bridge.post("/api/terminals", r#"{"profile":"rm-rf"}"#).await?;
    ensure!(r.status == 400 && r.body.contains("unknown profile"), "{r:?}");
    let r = bridge.post("/api/terminals", r#"{"command":"id"}"#).await?;
    ensure!(r.status == 400, "a command is not a field: {r:?}");
    Ok(())
}

#[tokio::test]
async fn full_pool_is_503_with_retry_after() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().capacity(1)).await?;
    let bridge = Bridge::start(daemon.socket(), &[]).await?;
    bridge.create("").await?;
    let r = bridge.post("/api/terminals", "").await?;
    ensure!(r.status == 503, "{r:?}");
    ensure!(r.header("retry-after").is_some_and(|v| v.parse::<u64>().is_ok()), "{r:?}");
    let body = r.json()?;
    ensure!(body["error"] == "AtCapacity", "{body}");
    ensure!(body["message"] == "pty pool is at capacity (1)", "{body}");
    let metrics = bridge.get("/metrics").await?.body;
    let refused = "ptyd_bridge_create_failures_total{error=\"AtCapacity\"} 1";
    ensure!(metrics.contains(refused), "{refused} missing:\n{metrics}");
    bridge.wait_for_log("cannot create a terminal: pty pool is at capacity (1)", TIMEOUT).await?;
    Ok(())
}

#[tokio::test]
async fn foreign_origins_are_refused_on_post_and_upgrade() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge =
        Bridge::start(daemon.socket(), &["--allowed-origin", "https://term.example"]).await?;
    let evil = [("Origin", "http://evil.example")];
    let r = bridge.request("POST", "/api/terminals", &evil, None).await?;
    ensure!(r.status == 403 && r.json()?["error"] == "Forbidden", "{r:?}");
    let own = bridge.origin();
    for origin in [own.as_str(), "http://localhost:1", "https://term.example"] {
        let r = bridge.request("POST", "/api/terminals", &[("Origin", origin)], None).await?;
        let allowed = origin != "http://localhost:1";
        ensure!((r.status == 201) == allowed, "{origin}: {r:?}");
    }
    let id = bridge.create("").await?;
    let e = bridge.upgrade(&format!("/ws/terminal/{id}"), &evil).await.err().context("ok")?;
    ensure!(upgrade_status(&e) == Some(403), "{e}");
    let r = bridge.request("DELETE", &format!("/api/terminals/{id}"), &evil, None).await?;
    ensure!(r.status == 403, "{r:?}");
    // Reading is not state-changing: no origin check.
    ensure!(bridge.request("GET", "/api/terminals", &evil, None).await?.status == 200);
    let ws = bridge.upgrade(&format!("/ws/terminal/{id}"), &[("Origin", &own)]).await?;
    drop(ws);
    Ok(())
}

#[tokio::test]
async fn non_loopback_without_authentication_refuses_to_start() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let args = ["--no-spawn-daemon", "--listen", "0.0.0.0:0", "--no-auth"];
    let mut bridge = Bridge::launch(daemon.socket(), &args)?;
    let status = bridge.wait_exit(TIMEOUT).await?;
    ensure!(!status.success(), "{status}");
    let log = bridge.log();
    ensure!(log.contains("refusing to listen on 0.0.0.0:0 without authentication"), "{log}");
    // With a token it starts.
    let with_token =
        Bridge::start(daemon.socket(), &["--listen", "0.0.0.0:0", "--token", "t0ken"]).await?;
    ensure!(with_token.get("/health").await?.status == 200);
    Ok(())
}

#[tokio::test]
async fn a_token_is_required_by_header_cookie_or_ticket() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge = Bridge::start(daemon.socket(), &["--token", "s3cret"]).await?;
    let anonymous = |path: &'static str| bridge.request_anonymous("GET", path, &[], None);
    ensure!(anonymous("/health").await?.status == 200, "health needs no token");
    let r = anonymous("/api/terminals").await?;
    ensure!(r.status == 401 && r.json()?["error"] == "Unauthorized", "{r:?}");
    let bearer = [("Authorization", "Bearer s3cret")];
    ensure!(
        bridge
            .request("GET", "/api/terminals", &[("Authorization", "Bearer no")], None)
            .await?
            .status
            == 401
    );
    let r = bridge.request("POST", "/api/terminals", &bearer, None).await?;
    ensure!(r.status == 201, "{r:?}");
    let id = r.json()?["id"].as_str().context("id")?.to_string();

    let login =
        |body: &'static str| bridge.request_anonymous("POST", "/api/login", &[], Some(body));
    let r = login(r#"{"token":"wrong"}"#).await?;
    ensure!(r.status == 401, "{r:?}");
    let r = login(r#"{"token":"s3cret"}"#).await?;
    ensure!(r.status == 204, "{r:?}");
    let cookie = r.header("set-cookie").context("no cookie")?.to_string();
    ensure!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let pair = cookie.split(';').next().context("cookie")?.to_string();
    ensure!(
        bridge.request("GET", "/api/terminals", &[("Cookie", &pair)], None).await?.status == 200
    );

    let path = format!("/ws/terminal/{id}");
    let e = bridge.upgrade_anonymous(&path, &[]).await.err().context("upgrade without token")?;
    ensure!(upgrade_status(&e) == Some(401), "{e}");
    // The long-lived token never goes into a URL: `?token=` is not a credential.
    let e = bridge.upgrade_anonymous(&format!("{path}?token=s3cret"), &[]).await.err();
    ensure!(e.as_ref().and_then(upgrade_status) == Some(401), "{e:?}");
    let ws = bridge.upgrade_anonymous(&path, &[("Cookie", &pair)]).await?;
    drop(ws);
    let ws = bridge.upgrade_anonymous(&path, &[("Authorization", "Bearer s3cret")]).await?;
    drop(ws);
    Ok(())
}

#[tokio::test]
async fn control_messages_are_answered_and_oversized_ones_close_with_1009() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge = Bridge::start(daemon.socket(), &[]).await?;
    let id = bridge.create("").await?;
    let mut ws = bridge.connect(&id, None).await?;
    ws.send_text(r#"{"type":"ping"}"#).await?;
    ws.expect_control("pong", TIMEOUT).await?;
    for (bad, code) in [
        ("not json", "BadMessage"),
        (r#"{"type":"resize","cols":0,"rows":3}"#, "BadMessage"),
        (r#"{"type":"exec","command":"id"}"#, "UnknownMessage"),
    ] {
        ws.send_text(bad).await?;
        let err = ws.expect_control("error", TIMEOUT).await?;
        ensure!(err["code"] == code, "{bad}: {err}");
    }
    // The socket survived all that.
    ws.send_input(b"echo st''ill-here\r").await?;
    ws.read_until("still-here", TIMEOUT).await?;
    ws.send_input(&vec![b'x'; 70_000]).await?;
    let (code, reason) = ws.expect_close(TIMEOUT).await?;
    ensure!(code == 1009, "{code} {reason}");
    ensure!(reason == "message of 70000 bytes exceeds the 65536-byte limit", "{reason}");
    bridge.wait_status(&id, "Disconnected", TIMEOUT).await?;
    Ok(())
}

#[tokio::test]
async fn health_readiness_and_metrics() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge = Bridge::start(daemon.socket(), &[]).await?;
    ensure!(bridge.get("/health").await?.status == 200);
    ensure!(bridge.get("/readyz").await?.status == 200);
    let id = bridge.create("").await?;
    let mut ws = bridge.connect(&id, None).await?;
    ws.send_input(b"echo me''trics\r").await?;
    ws.read_until("metrics", TIMEOUT).await?;
    let m = bridge.get("/metrics").await?;
    ensure!(m.status == 200, "{m:?}");
    for needle in [
        "ptyd_bridge_open_sockets 1",
        "ptyd_bridge_terminals{status=\"active\"} 1",
        "ptyd_bridge_reconnects_total",
        "ptyd_bridge_grace_expiries_total",
        "ptyd_bridge_heartbeat_timeouts_total",
        "ptyd_bridge_idle_closes_total",
        "ptyd_bridge_bytes_in_total",
        "ptyd_bridge_bytes_out_total",
    ] {
        ensure!(m.body.contains(needle), "{needle} missing:\n{}", m.body);
    }
    ensure!(!m.body.contains("ptyd_bridge_bytes_out_total 0\n"), "{}", m.body);
    Ok(())
}

#[tokio::test]
async fn starts_ptyd_when_none_answers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("run").join("ptyd.sock");
    // As under systemd: the bridge's notify socket must not be handed on to its ptyd.
    let notify = dir.path().join("notify.sock");
    let _notify = std::os::unix::net::UnixDatagram::bind(&notify)?;
    let env = [
        ("NOTIFY_SOCKET", notify.to_str().context("path")?),
        ("PTYD_BRIDGE_TOKEN", "for-the-bridge-only"),
    ];
    let mut bridge = Bridge::start_with_env(&socket, &[], &env).await?;
    let kids = ptyd_tests::children_of(bridge.pid());
    let ptyd = kids.iter().find(|k| k.2 == "ptyd").map(|k| k.0).context("no ptyd child")?;
    // Whatever happens next, do not leave it behind.
    struct Reap(u32);
    impl Drop for Reap {
        fn drop(&mut self) {
            let pid = nix::unistd::Pid::from_raw(self.0 as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
    let _reap = Reap(ptyd);
    let stat = ptyd_tests::proc_stat(ptyd).context("no stat")?;
    ensure!(stat.session == ptyd, "ptyd runs in its own session: {stat:?}");
    let environ = std::fs::read(format!("/proc/{ptyd}/environ"))?;
    for var in [&b"NOTIFY_SOCKET="[..], b"PTYD_BRIDGE_TOKEN="] {
        ensure!(
            !environ.split(|b| *b == 0).any(|v| v.starts_with(var)),
            "the started ptyd inherited {}",
            String::from_utf8_lossy(var)
        );
    }
    ensure!(dir.path().join("run").join("ptyd.log").is_file(), "ptyd.log beside the socket");
    ensure!(bridge.get("/readyz").await?.status == 200);
    bridge.create("").await?;
    bridge.kill9()?;
    ensure!(ptyd_tests::process_alive(ptyd), "ptyd outlives the bridge");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ptyd as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    ensure!(
        ptyd_tests::wait_until_async(TIMEOUT, || !ptyd_tests::process_alive(ptyd)).await,
        "ptyd did not stop"
    );
    Ok(())
}

#[tokio::test]
async fn server_pings_are_answered_by_real_clients() -> Result<()> {
    // A client that keeps reading answers every Ping, so the socket stays up across many
    // heartbeats and pong timeouts.
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge = Bridge::start(
        daemon.socket(),
        &["--heartbeat-interval", "100ms", "--pong-timeout", "200ms"],
    )
    .await?;
    let id = bridge.create("").await?;
    let mut ws = bridge.connect(&id, None).await?;
    let until = tokio::time::Instant::now() + Duration::from_millis(800);
    while tokio::time::Instant::now() < until {
        match ws.next(Duration::from_millis(100)).await {
            Ok(WsEvent::Close(code, reason)) => anyhow::bail!("closed: {code} {reason}"),
            Ok(WsEvent::Ended) => anyhow::bail!("ended"),
            _ => {}
        }
    }
    ensure!(bridge.log().contains("Received pong response (frame"), "{}", bridge.log_tail());
    bridge.wait_status(&id, "Active", TIMEOUT).await?;
    Ok(())
}

#[tokio::test]
async fn neither_the_bridge_nor_the_ptyd_it_starts_holds_an_inherited_descriptor() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("run").join("ptyd.sock");
    let lock = dir.path().join("lock");
    let log = dir.path().join("bridge.log");
    // As `flock L ptyd-bridge` or `ptyd-bridge | tee log`: fd 7 holds a lock, fd 8 is the
    // write end of a pipe nobody else holds, both without close-on-exec.
    let script = r#"exec 7>"$1"; flock 7; exec 8> >(cat >/dev/null); shift; exec "$@""#;
    let mut child = std::process::Command::new("bash")
        .args(["-c", script, "bash"])
        .arg(&lock)
        .arg(ptyd_tests::bridge::bridge_bin()?)
        .args(["--listen", "127.0.0.1:0", "--no-auth", "--socket"])
        .arg(&socket)
        .env("XDG_RUNTIME_DIR", dir.path())
        .env("HOME", dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::process::Stdio::null())
        .spawn()?;
    struct Kill(Vec<u32>);
    impl Drop for Kill {
        fn drop(&mut self) {
            for pid in &self.0 {
                let pid = nix::unistd::Pid::from_raw(*pid as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
    let mut guard = Kill(vec![child.id()]);
    let listening = ptyd_tests::wait_until_async(TIMEOUT, || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("listening on"))
    })
    .await;
    ensure!(listening, "the bridge did not start: {:?}", std::fs::read_to_string(&log));
    let bridge = child.id();
    let ptyd = ptyd_tests::children_of(bridge)
        .iter()
        .find(|k| k.2 == "ptyd")
        .map(|k| k.0)
        .context("no ptyd child")?;
    guard.0.push(ptyd);
    for (who, pid) in [("ptyd-bridge", bridge), ("its ptyd", ptyd)] {
        let fds = ptyd_tests::fd_targets(pid)?;
        for (fd, target) in &fds {
            ensure!(
                !target.contains(lock.to_str().unwrap_or("lock")) && !target.starts_with("pipe:"),
                "{who} holds inherited fd {fd} -> {target}: {fds:?}"
            );
        }
    }
    // The lock can be taken again at once while both run.
    let free = std::process::Command::new("flock").args(["-n"]).arg(&lock).arg("true").status()?;
    ensure!(free.success(), "the lock is still held");
    child.kill()?;
    child.wait()?;
    Ok(())
}

#[tokio::test]
async fn the_page_is_compressed_cached_by_etag_and_asks_for_no_icon() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge = Bridge::start(daemon.socket(), &[]).await?;
    let index = bridge.get("/").await?;
    if index.status == 503 {
        eprintln!("skipping: the web page was not built into this bridge");
        return Ok(());
    }
    ensure!(index.status == 200 && index.header("cache-control") == Some("no-cache"), "{index:?}");
    // No favicon request, so no 404 on load.
    ensure!(index.body.contains(r#"<link rel="icon" href="data:,">"#), "{}", index.body);

    let plain = bridge.get("/assets/app.js").await?;
    let etag = plain.header("etag").context("no ETag")?.to_string();
    ensure!(plain.status == 200 && etag.starts_with('"') && etag.len() == 34, "{etag}");
    ensure!(plain.header("content-encoding").is_none(), "not asked for: {:?}", plain.headers);
    for encoding in ["gzip", "br"] {
        let (head, body) = raw_get(&bridge, "/assets/app.js", encoding).await?;
        ensure!(head.contains(&format!("content-encoding: {encoding}")), "{head}");
        ensure!(body < plain.body.len() / 2, "{encoding}: {body} bytes of {}", plain.body.len());
    }
    // The same file again: 304 and no body; another ETag: the file.
    let again = bridge.request("GET", "/assets/app.js", &[("If-None-Match", &etag)], None).await?;
    ensure!(again.status == 304 && again.body.is_empty(), "{again:?}");
    let stale =
        bridge.request("GET", "/assets/app.js", &[("If-None-Match", "\"0\"")], None).await?;
    ensure!(stale.status == 200, "{stale:?}");
    Ok(())
}

/// `GET path` with `Accept-Encoding: encoding`, read raw: the response head (lowercased)
/// and the size of what follows it.
async fn raw_get(bridge: &Bridge, path: &str, encoding: &str) -> Result<(String, usize)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(bridge.addr()).await?;
    let auth = bridge.token().map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept-Encoding: {encoding}\r\n{auth}Connection: close\r\n\r\n",
        bridge.addr()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut all = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut all)).await??;
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").context("no end of head")?;
    let head = String::from_utf8_lossy(&all[..split]).to_lowercase();
    Ok((head, all.len() - split - 4))
}
