//! Who gets a shell through the bridge: authentication on by default (a generated token
//! in a private file, a login URL on stdout, never in a log line), other local users
//! refused, WebSocket tickets, the Host check against DNS rebinding, the lockout after
//! wrong credentials, CORS for configured origins, and WebSocket protocol violations
//! closed with the RFC's codes.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use ptyd_tests::bridge::{upgrade_status, Bridge};
use ptyd_tests::{Daemon, DaemonOptions, TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn with_nothing_configured_a_token_is_generated_kept_private_and_required() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge = Bridge::start_generated(daemon.socket(), &[]).await?;
    let token = bridge.token().context("no token")?.to_string();
    let file = bridge.dir().join("ptyd-bridge").join("token");
    let meta = std::fs::metadata(&file).with_context(|| format!("{}", file.display()))?;
    ensure!(meta.permissions().mode() & 0o777 == 0o600, "{:o}", meta.permissions().mode());
    ensure!(std::fs::read_to_string(&file)?.trim() == token);
    let log = bridge.log();
    let login = format!("open http://{}/?token={token} to log in", bridge.addr());
    ensure!(log.contains(&login), "no login URL in:\n{log}");

    for (method, path) in [
        ("POST", "/api/terminals"),
        ("GET", "/api/terminals"),
        ("GET", "/metrics"),
        ("GET", "/api/terminals/00000000-0000-0000-0000-000000000000"),
    ] {
        let r = bridge.request_anonymous(method, path, &[], None).await?;
        ensure!(r.status == 401, "{method} {path} without a token: {r:?}");
    }
    let id = bridge.create("").await?;
    let e = bridge.upgrade_anonymous(&format!("/ws/terminal/{id}"), &[]).await.err();
    ensure!(e.as_ref().and_then(upgrade_status) == Some(401), "{e:?}");
    Ok(())
}

/// Runs a Python HTTP client as uid `nobody`: what another local user gets. Debian's
/// python3, since a per-user install (pyenv) is not readable by other users.
fn as_nobody(script: &str) -> Result<String> {
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .context("no system python3 (apt-get install python3)")?;
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", python, "-c", script])
        .output()
        .context("setpriv (util-linux)")?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[tokio::test]
async fn another_local_user_can_neither_open_nor_read_a_terminal() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge = Bridge::start_generated(daemon.socket(), &[]).await?;
    let id = bridge.create("").await?;
    let addr = bridge.addr();
    let script = format!(
        r#"
import http.client, json
out = []
for method, path in [("POST", "/api/terminals"), ("GET", "/api/terminals"),
                     ("GET", "/api/terminals/{id}"), ("GET", "/metrics"),
                     ("POST", "/api/terminals/{id}/ticket"), ("DELETE", "/api/terminals/{id}"),
                     ("GET", "/ws/terminal/{id}")]:
    c = http.client.HTTPConnection("{host}", {port}, timeout=10)
    headers = {{"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}} if path.startswith("/ws/") else {{}}
    c.request(method, path, headers=headers)
    r = c.getresponse()
    out.append("%s %s %d %s" % (method, path, r.status, "{id}" in r.read().decode()))
# Guessing the token: locked out after a few tries.
codes = []
for i in range(12):
    c = http.client.HTTPConnection("{host}", {port}, timeout=10)
    c.request("POST", "/api/login", body=json.dumps({{"token": "guess%d" % i}}))
    codes.append(c.getresponse().status)
out.append("login %s" % codes)
print("\n".join(out))
"#,
        host = addr.ip(),
        port = addr.port(),
    );
    let out = tokio::task::spawn_blocking(move || as_nobody(&script)).await??;
    let mut lines = out.lines();
    for line in lines.by_ref().take(7) {
        ensure!(line.ends_with(" 401 False"), "as nobody: {line}\n{out}");
    }
    let login = lines.next().context("no login line")?;
    ensure!(login.contains("401") && login.ends_with("429, 429]"), "{login}");
    // The terminal still runs, untouched (asked of ptyd: the bridge now locks 127.0.0.1
    // out for a while, the owner included, which is the price of a lockout on loopback).
    let client = ipc_proto::Client::connect(daemon.socket()).await?;
    let info = client.info(id.parse()?).await?;
    ensure!(info.exit.is_none(), "{info:?}");
    Ok(())
}

#[tokio::test]
async fn the_token_appears_in_no_log_line_even_at_trace() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let token = "tr4ce-me-n0t-in-logs";
    let env = [("PTYD_BRIDGE_TOKEN", token), ("RUST_LOG", "trace")];
    let bridge = Bridge::start_with_env(daemon.socket(), &["--no-spawn-daemon"], &env).await?;
    // Exercise every path that handles it: login, bearer, cookie, tickets, wrong ones.
    let r = bridge
        .request_anonymous("POST", "/api/login", &[], Some(&format!(r#"{{"token":"{token}"}}"#)))
        .await?;
    ensure!(r.status == 204, "{r:?}");
    let cookie = r.header("set-cookie").context("cookie")?.split(';').next().unwrap().to_string();
    ensure!(
        bridge
            .request_anonymous("GET", "/api/terminals", &[("Cookie", &cookie)], None)
            .await?
            .status
            == 200
    );
    let wrong = bridge
        .request_anonymous("GET", "/metrics", &[("Authorization", "Bearer nope")], None)
        .await?;
    ensure!(wrong.status == 401);
    let id = bridge.create("").await?;
    let ticket = bridge.post(&format!("/api/terminals/{id}/ticket"), "").await?.json()?;
    let url = ticket["ws_url"].as_str().context("ws_url")?;
    let path = url.split_once(&bridge.addr().to_string()).context("host")?.1.to_string();
    let mut ws =
        ptyd_tests::bridge::WsClient::new(bridge.upgrade_anonymous(&path, &[]).await?).await?;
    ws.send_input(b"echo count=$(env | grep -c PTYD_BRIDGE_TOKEN)-$((6*7))\r").await?;
    let out = ws.read_until("-42", TIMEOUT).await?;
    ensure!(out.contains("count=0-42"), "the shell's environment has the token: {out:?}");
    let log = bridge.log() + &daemon.log();
    let hits: Vec<&str> = log.lines().filter(|l| l.contains(token)).collect();
    ensure!(hits.is_empty(), "the token is in log lines: {hits:#?}");
    let hex: String = token.bytes().map(|b| format!("{b:02x}")).collect();
    ensure!(!log.contains(&hex), "the cookie value is in the log");
    Ok(())
}

#[tokio::test]
async fn tickets_open_one_socket_each_and_expire() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge = Bridge::start(daemon.socket(), &[]).await?;
    let id = bridge.create("").await?;
    let other = bridge.create("").await?;
    let bridge = &bridge;
    let mint = |id: String| async move {
        let r = bridge.post(&format!("/api/terminals/{id}/ticket"), "").await?;
        ensure!(r.status == 201, "{r:?}");
        let v = r.json()?;
        ensure!(v["expires_in_ms"] == 30_000, "{v}");
        let ws_url = v["ws_url"].as_str().context("ws_url")?.to_string();
        ensure!(ws_url.starts_with(&format!("ws://{}/ws/terminal/{id}?ticket=", bridge.addr())));
        Ok::<_, anyhow::Error>(v["ticket"].as_str().context("ticket")?.to_string())
    };
    let ticket = mint(id.clone()).await?;
    let path = format!("/ws/terminal/{id}?ticket={ticket}");
    let ws = bridge.upgrade_anonymous(&path, &[]).await?;
    drop(ws);
    let again = bridge.upgrade_anonymous(&path, &[]).await.err();
    ensure!(again.as_ref().and_then(upgrade_status) == Some(401), "reused: {again:?}");
    let for_other = mint(other.clone()).await?;
    let e = bridge.upgrade_anonymous(&format!("/ws/terminal/{id}?ticket={for_other}"), &[]).await;
    ensure!(e.err().as_ref().and_then(upgrade_status) == Some(401), "a ticket is for one terminal");
    let r =
        bridge.request_anonymous("POST", &format!("/api/terminals/{id}/ticket"), &[], None).await?;
    ensure!(r.status == 401, "minting needs a credential: {r:?}");
    let r = bridge.post("/api/terminals/00000000-0000-0000-0000-000000000000/ticket", "").await?;
    ensure!(r.status == 404, "{r:?}");

    let short = Bridge::start(daemon.socket(), &["--ticket-ttl", "20ms"]).await?;
    let id = short.create("").await?;
    let r = short.post(&format!("/api/terminals/{id}/ticket"), "").await?.json()?;
    let ticket = r["ticket"].as_str().context("ticket")?.to_string();
    // The condition here is time itself: the ticket's lifetime has to pass.
    tokio::time::sleep(Duration::from_millis(60)).await;
    let e = short.upgrade_anonymous(&format!("/ws/terminal/{id}?ticket={ticket}"), &[]).await;
    ensure!(e.err().as_ref().and_then(upgrade_status) == Some(401), "expired ticket worked");
    Ok(())
}

#[tokio::test]
async fn a_foreign_host_learns_nothing() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge = Bridge::start(daemon.socket(), &["--allowed-host", "term.test"]).await?;
    let id = bridge.create("").await?;
    let evil = [("Host", "evil.example")];
    for (method, path) in [
        ("GET", "/api/terminals".to_string()),
        ("GET", format!("/api/terminals/{id}")),
        ("GET", "/metrics".to_string()),
        ("GET", "/readyz".to_string()),
        ("POST", "/api/terminals".to_string()),
        ("GET", "/".to_string()),
    ] {
        let r = http_with_host(&bridge, method, &path, "evil.example").await?;
        ensure!(r.0 == 421, "{method} {path} with Host evil.example: {} {}", r.0, r.1);
        ensure!(!r.1.contains(&id), "{method} {path} leaked the id: {}", r.1);
    }
    let e = bridge.upgrade(&format!("/ws/terminal/{id}"), &evil).await.err();
    ensure!(e.as_ref().and_then(upgrade_status) == Some(421), "{e:?}");
    // Its own names and the configured one are served; the ws_url comes from configuration.
    for host in [
        bridge.addr().to_string(),
        format!("localhost:{}", bridge.addr().port()),
        "term.test".into(),
    ] {
        let r = http_with_host(&bridge, "GET", "/api/terminals", &host).await?;
        ensure!(r.0 == 200 && r.1.contains(&id), "{host}: {r:?}");
    }
    let r = bridge.request("POST", "/api/terminals", &[("Host", "term.test")], None).await?;
    let ws_url = r.json()?["ws_url"].as_str().context("ws_url")?.to_string();
    ensure!(ws_url.starts_with(&format!("ws://{}/ws/terminal/", bridge.addr())), "{ws_url}");
    // A public URL names the ws_url (wss behind TLS) and is a host of its own.
    let public = Bridge::start(daemon.socket(), &["--public-url", "https://shell.test/t"]).await?;
    let r = public.request("POST", "/api/terminals", &[("Host", "shell.test")], None).await?;
    ensure!(r.status == 201, "{r:?}");
    let ws_url = r.json()?["ws_url"].as_str().context("ws_url")?.to_string();
    ensure!(ws_url.starts_with("wss://shell.test/t/ws/terminal/"), "{ws_url}");
    // /health says nothing and is answered whatever the Host, for probes.
    ensure!(http_with_host(&bridge, "GET", "/health", "evil.example").await?.0 == 200);
    Ok(())
}

/// One request with an explicit `Host` and the bridge's token: (status, body).
async fn http_with_host(
    bridge: &Bridge,
    method: &str,
    path: &str,
    host: &str,
) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(bridge.addr()).await?;
    let auth = bridge.token().map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\nContent-Length: 0\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut raw)).await??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1).context("no status")?.parse()?;
    Ok((status, text))
}

#[tokio::test]
async fn wrong_credentials_lock_the_address_out_for_a_while() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge = Bridge::start(daemon.socket(), &["--token", "right"]).await?;
    for i in 0..9 {
        let body = format!(r#"{{"token":"wrong{i}"}}"#);
        let r = bridge.request_anonymous("POST", "/api/login", &[], Some(&body)).await?;
        ensure!(r.status == 401, "attempt {i}: {r:?}");
    }
    // A wrong bearer token counts too: the tenth failure locks the address out.
    let r = bridge
        .request_anonymous("GET", "/api/terminals", &[("Authorization", "Bearer x")], None)
        .await?;
    ensure!(r.status == 429, "{r:?}");
    let retry: u64 = r.header("retry-after").context("no Retry-After")?.parse()?;
    ensure!((1..=60).contains(&retry), "{retry}");
    ensure!(r.json()?["error"] == "TooManyAttempts");
    // While locked out, even the right token is refused, so guessing faster gains nothing.
    let r =
        bridge.request_anonymous("POST", "/api/login", &[], Some(r#"{"token":"right"}"#)).await?;
    ensure!(r.status == 429, "{r:?}");
    let r = bridge
        .request_anonymous("GET", "/api/terminals", &[("Authorization", "Bearer right")], None)
        .await?;
    ensure!(r.status == 429, "{r:?}");
    // The address is locked out as a whole; the open paths still answer.
    ensure!(bridge.request_anonymous("GET", "/api/terminals", &[], None).await?.status == 429);
    ensure!(bridge.request_anonymous("GET", "/health", &[], None).await?.status == 200);
    Ok(())
}

#[tokio::test]
async fn cors_preflights_are_answered_for_configured_origins_only() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge =
        Bridge::start(daemon.socket(), &["--allowed-origin", "http://127.0.0.1:9"]).await?;
    let bridge = &bridge;
    let preflight = |origin: &'static str| async move {
        let headers = [
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "authorization,content-type"),
        ];
        bridge.request_anonymous("OPTIONS", "/api/terminals", &headers, None).await
    };
    let ok = preflight("http://127.0.0.1:9").await?;
    ensure!(ok.status == 200, "{ok:?}");
    ensure!(ok.header("access-control-allow-origin") == Some("http://127.0.0.1:9"), "{ok:?}");
    ensure!(ok.header("access-control-allow-credentials") == Some("true"), "{ok:?}");
    let methods = ok.header("access-control-allow-methods").unwrap_or_default();
    ensure!(methods.contains("POST"), "{ok:?}");
    let headers =
        ok.header("access-control-allow-headers").unwrap_or_default().to_ascii_lowercase();
    ensure!(headers.contains("authorization"), "{ok:?}");
    let bad = preflight("http://evil.example").await?;
    ensure!(bad.header("access-control-allow-origin").is_none(), "{bad:?}");
    // A credentialed request from the configured origin works and says so.
    let r =
        bridge.request("POST", "/api/terminals", &[("Origin", "http://127.0.0.1:9")], None).await?;
    ensure!(r.status == 201, "{r:?}");
    ensure!(r.header("access-control-allow-origin") == Some("http://127.0.0.1:9"), "{r:?}");
    Ok(())
}

/// A raw WebSocket on `path`: the upgrade written by hand, so frames can be malformed.
async fn raw_socket(bridge: &Bridge, path: &str) -> Result<TcpStream> {
    let mut s = TcpStream::connect(bridge.addr()).await?;
    let auth = bridge.token().map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\n{auth}Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        bridge.addr()
    );
    s.write_all(req.as_bytes()).await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tokio::time::timeout(TIMEOUT, s.read_exact(&mut b)).await??;
        head.push(b[0]);
    }
    ensure!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    Ok(s)
}

/// A masked client frame with the given first byte (FIN, RSV bits, opcode).
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![first, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads server frames until a close frame; its code.
async fn close_code(s: &mut TcpStream) -> Result<u16> {
    loop {
        let mut h = [0u8; 2];
        tokio::time::timeout(TIMEOUT, s.read_exact(&mut h)).await?.context("no close frame")?;
        let mut len = (h[1] & 0x7f) as usize;
        if len == 126 {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).await?;
            len = u16::from_be_bytes(l) as usize;
        } else if len == 127 {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).await?;
            len = u64::from_be_bytes(l) as usize;
        }
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await?;
        if h[0] & 0x0f == 0x8 {
            ensure!(payload.len() >= 2, "close frame without a code");
            return Ok(u16::from_be_bytes([payload[0], payload[1]]));
        }
    }
}

#[tokio::test]
async fn websocket_protocol_violations_close_with_the_rfc_codes() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge = Bridge::start(daemon.socket(), &["--grace", "20s"]).await?;
    let id = bridge.create("").await?;
    for (what, bytes, want) in [
        ("a text frame of invalid UTF-8", frame(0x81, &[0xff, 0xfe, 0x41]), 1007),
        ("a frame with RSV1 set", frame(0xc2, b"x"), 1002),
        ("a reserved opcode", frame(0x83, b"x"), 1002),
    ] {
        let mut s = raw_socket(&bridge, &format!("/ws/terminal/{id}")).await?;
        s.write_all(&bytes).await?;
        let code = close_code(&mut s).await.with_context(|| format!("after {what}"))?;
        if code != want {
            bail!("{what}: closed with {code}, want {want}; log:\n{}", bridge.log_tail());
        }
        bridge.wait_status(&id, "Disconnected", TIMEOUT).await?;
    }
    // The terminal is fine and reachable again.
    let mut ws = bridge.connect(&id, None).await?;
    ws.send_input(b"echo st''ill\r").await?;
    ws.read_until("still", TIMEOUT).await?;
    Ok(())
}

#[tokio::test]
async fn half_sent_requests_are_cut_off_and_never_crowd_out_health_or_users() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let args = ["--header-timeout", "1s", "--max-anonymous-connections", "64"];
    let bridge = Bridge::start(daemon.socket(), &args).await?;
    let mut slow = Vec::new();
    for _ in 0..1000 {
        let mut s = TcpStream::connect(bridge.addr()).await?;
        s.write_all(b"GET /api/terminals HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").await?;
        slow.push(s);
    }
    // While they hang, probes and authenticated users are served.
    for _ in 0..3 {
        let r = tokio::time::timeout(TIMEOUT, bridge.get("/health")).await??;
        ensure!(r.status == 200, "{r:?}");
        let r = tokio::time::timeout(TIMEOUT, bridge.get("/api/terminals")).await??;
        ensure!(r.status == 200, "{r:?}");
    }
    let fds = ptyd_tests::fd_count(bridge.pid())?;
    ensure!(fds < 200, "the bridge holds {fds} descriptors for 1000 half-sent requests");
    // Every one of them is closed by the bridge: evicted at once, or after the timeout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for (i, s) in slow.iter_mut().enumerate() {
        let mut buf = [0u8; 512];
        loop {
            match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                Err(_) => bail!("half-sent request {i} still open after the header timeout"),
                Ok(Ok(0)) | Ok(Err(_)) => break,
                // hyper may answer 408 before it closes.
                Ok(Ok(_)) => {}
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn no_auth_must_be_asked_for_and_says_what_it_risks() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge = Bridge::start(daemon.socket(), &["--no-auth"]).await?;
    bridge.wait_for_log("authentication is disabled (--no-auth)", TIMEOUT).await?;
    let r = bridge.request_anonymous("POST", "/api/terminals", &[], None).await?;
    ensure!(r.status == 201, "{r:?}");
    // The Host check stays on: rebinding pages are still refused.
    ensure!(http_with_host(&bridge, "GET", "/api/terminals", "evil.example").await?.0 == 421);
    let flag = Bridge::start(daemon.socket(), &["--token", "on-the-command-line"]).await?;
    flag.wait_for_log("visible to every local user", TIMEOUT).await?;
    Ok(())
}

#[tokio::test]
async fn a_share_link_opens_its_one_terminal_read_only_until_revoked() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge = Bridge::start(daemon.socket(), &[]).await?;
    let id = bridge.create("").await?;
    let other = bridge.create("").await?;
    let r = bridge.post(&format!("/api/terminals/{id}/share"), "").await?;
    ensure!(r.status == 201, "{r:?}");
    let v = r.json()?;
    let token = v["token"].as_str().context("token")?.to_string();
    let url = v["url"].as_str().context("url")?;
    ensure!(url.ends_with(&format!("/t/{id}?role=read-only&share={token}")), "{url}");
    let share = format!("Share {token}");
    let with_share = [("Authorization", share.as_str())];
    // It reaches its terminal's entry and mints its tickets, nothing else.
    let entry = format!("/api/terminals/{id}");
    let r = bridge.request_anonymous("GET", &entry, &with_share, None).await?;
    ensure!(r.status == 200, "{r:?}");
    for (method, path) in [
        ("GET", "/api/terminals".to_string()),
        ("POST", "/api/terminals".to_string()),
        ("GET", format!("/api/terminals/{other}")),
        ("POST", format!("/api/terminals/{other}/ticket")),
        ("POST", format!("/api/terminals/{id}/share")),
        ("DELETE", format!("/api/terminals/{id}")),
        ("POST", format!("/api/terminals/{id}/detach")),
    ] {
        let r = bridge.request_anonymous(method, &path, &with_share, Some("{}")).await?;
        ensure!(r.status == 403, "{method} {path} with a share link: {r:?}");
    }
    let mint = || async {
        let path = format!("/api/terminals/{id}/ticket");
        bridge.request_anonymous("POST", &path, &with_share, None).await
    };
    let ticket = mint().await?.json()?["ticket"].as_str().context("ticket")?.to_string();
    // Read-only whatever it asks for.
    let path = format!("/ws/terminal/{id}?role=read-write&takeover=1&ticket={ticket}");
    let mut watcher =
        ptyd_tests::bridge::WsClient::new(bridge.upgrade_anonymous(&path, &[]).await?).await?;
    ensure!(watcher.hello["role"] == "read-only", "{}", watcher.hello);
    let mut owner = bridge.connect(&id, None).await?;
    owner.send_input(b"echo own''er\r").await?;
    watcher.read_until("owner", TIMEOUT).await?;
    watcher.send_input(b"echo nope\r").await?;
    let refused = watcher.expect_control("error", TIMEOUT).await?;
    ensure!(refused["code"] == "PermissionDenied", "{refused}");

    // Revoked: its socket closes, and it mints nothing more.
    let r = bridge.delete(&format!("/api/terminals/{id}/share")).await?;
    ensure!(r.status == 200 && r.json()?["revoked"] == 1 && r.json()?["closed"] == 1, "{r:?}");
    let (code, reason) = watcher.expect_close(TIMEOUT).await?;
    ensure!(code == 4005 && reason == "share link revoked", "{code} {reason}");
    ensure!(mint().await?.status == 401, "a revoked share still mints tickets");
    // The owner's socket is untouched.
    owner.send_input(b"echo still-own''er\r").await?;
    owner.read_until("still-owner", TIMEOUT).await?;
    Ok(())
}
