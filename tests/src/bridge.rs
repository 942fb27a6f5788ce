//! A `ptyd-bridge` process for one test, with small HTTP and WebSocket clients for it.
//!
//! [`Bridge::start`] runs `ptyd-bridge --socket <daemon socket> --listen 127.0.0.1:0
//! --no-spawn-daemon <extra args>` in its own temporary directory (its `HOME`; `SHELL` is
//! `/bin/sh`), with stdout and stderr in `<tmp>/bridge.log`, and returns once the log shows
//! `listening on http://ADDR`. Unless the arguments say how to authenticate (`--token`,
//! `--token-file`, `--no-auth`) or [`Bridge::start_generated`] lets the bridge generate its
//! token, the bridge gets `--token-file <tmp>/token`; [`Bridge::request`] and the upgrades
//! send that token as a bearer header unless the caller sends its own credential. Dropping it kills the process (SIGKILL) and, when the test
//! is panicking, prints the log's tail; with `PTYD_TEST_KEEP_LOGS=1` the directory is kept. [`http`] speaks just enough HTTP/1.1
//! (`Connection: close`); [`WsClient`] wraps tokio-tungstenite and tracks terminal offsets.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures::{SinkExt, StreamExt};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::TIMEOUT;

/// Short timings for lifecycle tests (the defaults are 10 s, 30 s, 10 s and 5 min).
pub const GRACE: &str = "300ms";
/// Heartbeat interval for heartbeat tests.
pub const HEARTBEAT: &str = "200ms";
/// Pong timeout for heartbeat tests.
pub const PONG_TIMEOUT: &str = "200ms";
/// Idle timeout for idle tests.
pub const IDLE: &str = "500ms";

const LOG_TAIL_LINES: usize = 80;

/// The `ptyd-bridge` binary.
pub fn bridge_bin() -> Result<PathBuf> {
    crate::bin_path("ptyd-bridge")
}

/// A running `ptyd-bridge`, owned by one test.
#[derive(Debug)]
pub struct Bridge {
    child: Child,
    dir: TempDir,
    log: PathBuf,
    addr: Option<SocketAddr>,
    status: Option<ExitStatus>,
    token: Option<String>,
}

/// How a launched bridge authenticates.
enum AuthSetup {
    /// The helper writes a token file and passes `--token-file`, unless the arguments
    /// configure authentication themselves.
    Helper,
    /// The bridge generates its own token; it is read back from the login URL line.
    Generated,
}

impl Bridge {
    /// Starts a bridge for the ptyd at `daemon_socket` and waits for its listening line.
    pub async fn start(daemon_socket: &Path, extra_args: &[&str]) -> Result<Bridge> {
        let mut args = vec!["--no-spawn-daemon"];
        args.extend_from_slice(extra_args);
        Self::start_raw(daemon_socket, &args).await
    }

    /// Like [`Bridge::start`] without `--no-spawn-daemon`.
    pub async fn start_raw(daemon_socket: &Path, args: &[&str]) -> Result<Bridge> {
        let mut bridge = Self::launch(daemon_socket, args)?;
        bridge.wait_listening(TIMEOUT).await?;
        Ok(bridge)
    }

    /// Spawns the bridge without waiting (for tests of startup failures).
    pub fn launch(daemon_socket: &Path, args: &[&str]) -> Result<Bridge> {
        Self::launch_with_env(daemon_socket, args, &[])
    }

    /// Like [`Bridge::start_raw`], with extra environment variables.
    pub async fn start_with_env(
        daemon_socket: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Bridge> {
        let mut bridge = Self::launch_with_env(daemon_socket, args, env)?;
        bridge.wait_listening(TIMEOUT).await?;
        Ok(bridge)
    }

    /// A bridge that generates its own token (nothing configured, as a user would run it);
    /// [`Bridge::token`] is read from the login URL it prints.
    pub async fn start_generated(daemon_socket: &Path, args: &[&str]) -> Result<Bridge> {
        let mut all = vec!["--no-spawn-daemon"];
        all.extend_from_slice(args);
        let mut bridge = Self::launch_inner(daemon_socket, &all, &[], AuthSetup::Generated)?;
        bridge.wait_listening(TIMEOUT).await?;
        let line = bridge.wait_for_log("/?token=", TIMEOUT).await?;
        let token = line.split("/?token=").nth(1).and_then(|t| t.split_whitespace().next());
        bridge.token = Some(token.context("no token in the login URL")?.to_string());
        Ok(bridge)
    }

    /// Like [`Bridge::launch`], with extra environment variables.
    pub fn launch_with_env(
        daemon_socket: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Bridge> {
        Self::launch_inner(daemon_socket, args, env, AuthSetup::Helper)
    }

    fn launch_inner(
        daemon_socket: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        auth: AuthSetup,
    ) -> Result<Bridge> {
        let bin = bridge_bin()?;
        let dir = tempfile::Builder::new().prefix("ptyd-bridge-test-").tempdir()?;
        let log = dir.path().join("bridge.log");
        let file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(&bin);
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("PTYD_")) {
                cmd.env_remove(key);
            }
        }
        let rust_log =
            std::env::var("RUST_LOG").unwrap_or_else(|_| "debug,ptyd_bridge=trace".into());
        cmd.arg("--socket").arg(daemon_socket);
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        let configured = args.iter().any(|a| ["--token", "--token-file", "--no-auth"].contains(a))
            || env.iter().any(|(k, _)| *k == "PTYD_BRIDGE_TOKEN" || *k == "PTYD_BRIDGE_NO_AUTH");
        let mut token = None;
        if let Some(i) = args.iter().position(|a| *a == "--token") {
            token = args.get(i + 1).map(|t| t.to_string());
        } else if let Some((_, t)) = env.iter().find(|(k, _)| *k == "PTYD_BRIDGE_TOKEN") {
            token = Some(t.to_string());
        } else if !configured && matches!(auth, AuthSetup::Helper) {
            let t = format!("test-token-{}", crate::unique_suffix());
            let path = dir.path().join("token");
            std::fs::write(&path, &t)?;
            cmd.arg("--token-file").arg(&path);
            token = Some(t);
        }
        cmd.args(args)
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .env("SHELL", "/bin/sh")
            .env("HOME", dir.path())
            .env("XDG_RUNTIME_DIR", dir.path())
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = cmd.spawn().with_context(|| format!("cannot run {}", bin.display()))?;
        Ok(Bridge { child, dir, log, addr: None, status: None, token })
    }

    async fn wait_listening(&mut self, timeout: Duration) -> Result<()> {
        let mut found = None;
        let ok = crate::wait_until_async(timeout, || {
            found = self.log().lines().find_map(|l| {
                l.strip_prefix("listening on http://").and_then(|a| a.trim().parse().ok())
            });
            found.is_some() || self.child.try_wait().ok().flatten().is_some()
        })
        .await;
        match found {
            Some(addr) => {
                self.addr = Some(addr);
                Ok(())
            }
            None if ok => bail!("ptyd-bridge exited during startup; log:\n{}", self.log_tail()),
            None => {
                bail!("ptyd-bridge did not listen within {timeout:?}; log:\n{}", self.log_tail())
            }
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("the bridge is listening")
    }

    /// The bridge's own origin, `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The token the helper sends, if the bridge requires one.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The bridge's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The temporary directory (the bridge's HOME).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The whole log.
    pub fn log(&self) -> String {
        crate::logfile::read(&self.log)
    }

    /// The last lines of the log.
    pub fn log_tail(&self) -> String {
        crate::logfile::tail(&self.log, LOG_TAIL_LINES)
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<String> {
        crate::logfile::wait_for(&self.log, "the bridge", needle, timeout, LOG_TAIL_LINES).await
    }

    /// Sends `signal` to the bridge.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        kill(Pid::from_raw(self.pid() as i32), signal)?;
        Ok(())
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) -> Result<()> {
        if self.status.is_none() {
            kill(Pid::from_raw(self.pid() as i32), Signal::SIGKILL)?;
            self.status = Some(self.child.wait()?);
        }
        Ok(())
    }

    /// Waits for the process to exit by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let mut status = None;
        let child = &mut self.child;
        let _exited = crate::wait_until_async(timeout, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        })
        .await;
        self.status = status;
        status.with_context(|| format!("the bridge still runs after {timeout:?}"))
    }

    /// An HTTP request to the bridge, with the helper's bearer token unless `headers`
    /// carry an `Authorization` or `Cookie` of their own.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Result<HttpResponse> {
        let all = self.with_token(headers);
        let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        http(self.addr(), method, path, &all, body).await
    }

    /// An HTTP request with exactly `headers`: no credential unless they carry one.
    pub async fn request_anonymous(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Result<HttpResponse> {
        http(self.addr(), method, path, headers, body).await
    }

    fn with_token(&self, headers: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> =
            headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let has_credential = headers.iter().any(|(k, _)| {
            k.eq_ignore_ascii_case("authorization") || k.eq_ignore_ascii_case("cookie")
        });
        if let (Some(token), false) = (&self.token, has_credential) {
            all.push(("Authorization".into(), format!("Bearer {token}")));
        }
        all
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<HttpResponse> {
        self.request("GET", path, &[], None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &str) -> Result<HttpResponse> {
        self.request("POST", path, &[], Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<HttpResponse> {
        self.request("DELETE", path, &[], None).await
    }

    /// Creates a terminal (`POST /api/terminals` with `body`), failing unless 201; its id.
    pub async fn create(&self, body: &str) -> Result<String> {
        let r = self.post("/api/terminals", body).await?;
        if r.status != 201 {
            bail!("create answered {} {}; log:\n{}", r.status, r.body, self.log_tail());
        }
        Ok(r.json()?["id"].as_str().context("no id")?.to_string())
    }

    /// The terminal's entry in `GET /api/terminals`.
    pub async fn terminal(&self, id: &str) -> Result<Value> {
        let list = self.get("/api/terminals").await?.json()?;
        let all = list["terminals"].as_array().context("no terminals array")?;
        all.iter().find(|t| t["id"] == id).cloned().with_context(|| format!("{id} not listed"))
    }

    /// Waits until the terminal's status is `status`.
    pub async fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Result<()> {
        let ok = crate::wait_until_with(timeout, async || {
            self.terminal(id).await.is_ok_and(|t| t["status"] == status)
        })
        .await;
        if !ok {
            bail!(
                "terminal {id} is not {status} after {timeout:?} ({:?}); log:\n{}",
                self.terminal(id).await.ok(),
                self.log_tail()
            );
        }
        Ok(())
    }

    /// A WebSocket to the terminal, its `hello` already read.
    pub async fn connect(&self, id: &str, since: Option<u64>) -> Result<WsClient> {
        let query = since.map(|s| format!("?since={s}")).unwrap_or_default();
        let ws = self.upgrade(&format!("/ws/terminal/{id}{query}"), &[]).await?;
        WsClient::new(ws).await
    }

    /// A socket on terminal `id` with `query` (e.g. `role=read-only`, `takeover=1`).
    pub async fn connect_with(&self, id: &str, query: &str) -> Result<WsClient> {
        let ws = self.upgrade(&format!("/ws/terminal/{id}?{query}"), &[]).await?;
        WsClient::new(ws).await
    }

    /// An upgrade of `path_and_query` with extra headers, authenticated like
    /// [`Bridge::request`] (unless the path carries a `ticket=`).
    pub async fn upgrade(
        &self,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<WebSocketStream<MaybeTlsStream<TcpStream>>, tungstenite::Error> {
        let all = if path_and_query.contains("ticket=") {
            headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        } else {
            self.with_token(headers)
        };
        let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.upgrade_anonymous(path_and_query, &all).await
    }

    /// An upgrade with exactly `headers`.
    pub async fn upgrade_anonymous(
        &self,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<WebSocketStream<MaybeTlsStream<TcpStream>>, tungstenite::Error> {
        let url = format!("ws://{}{path_and_query}", self.addr());
        let mut req = url.into_client_request()?;
        for (k, v) in headers {
            req.headers_mut().insert(
                tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                v.parse().expect("header value"),
            );
        }
        // Browsers disable Nagle's algorithm on their sockets; so does this client.
        let (ws, _) = tokio_tungstenite::connect_async_with_config(req, None, true).await?;
        Ok(ws)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- ptyd-bridge log tail, {} ----\n{}\n----",
                self.log.display(),
                self.log_tail()
            );
        }
        if std::env::var(crate::daemon::KEEP_LOGS_ENV).is_ok_and(|v| v == "1") {
            let dir = std::mem::replace(&mut self.dir, tempfile::TempDir::new().expect("tempdir"));
            eprintln!("kept ptyd-bridge test directory {}", dir.keep().display());
        }
    }
}

/// The HTTP status a failed upgrade was answered with.
pub fn upgrade_status(e: &tungstenite::Error) -> Option<u16> {
    match e {
        tungstenite::Error::Http(r) => Some(r.status().as_u16()),
        _ => None,
    }
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.body).with_context(|| format!("not JSON: {:?}", self.body))
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut raw)).await.context("HTTP timeout")??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("no end of headers ({} bytes: {text:?})", raw.len()))?;
    let mut lines = head.lines();
    let status_line = lines.next().context("no status line")?;
    let status: u16 = status_line.split(' ').nth(1).context("no status")?.parse()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(rest)? } else { rest.to_string() };
    Ok(HttpResponse { status, headers, body })
}

fn dechunk(mut rest: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").context("bad chunk")?;
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(after.get(..size).context("short chunk")?);
        rest = after.get(size + 2..).context("short chunk")?;
    }
}

/// What a socket delivered.
#[derive(Debug, Clone, PartialEq)]
pub enum WsEvent {
    /// Terminal bytes.
    Output(Vec<u8>),
    /// A JSON control message.
    Control(Value),
    /// A close frame (code, reason).
    Close(u16, String),
    /// The connection ended without a close frame.
    Ended,
}

/// A browser-like socket: tracks the terminal offset of the next output byte.
pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The `hello` message.
    pub hello: Value,
    /// Offset of the next output byte (hello's offset plus every binary frame's length).
    pub offset: u64,
    /// Every output byte received.
    pub output: Vec<u8>,
    /// Control messages received after `hello`.
    pub controls: Vec<Value>,
}

impl WsClient {
    /// Wraps a fresh socket and reads its `hello`.
    pub async fn new(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Result<WsClient> {
        let mut c = WsClient {
            ws,
            hello: Value::Null,
            offset: 0,
            output: Vec::new(),
            controls: Vec::new(),
        };
        match c.next(TIMEOUT).await? {
            WsEvent::Control(v) if v["type"] == "hello" => {
                c.offset = v["offset"].as_u64().context("hello without offset")?;
                c.hello = v;
                c.controls.clear();
                Ok(c)
            }
            other => bail!("expected hello, got {other:?}"),
        }
    }

    /// The next event (Pings are answered by tungstenite while reading).
    pub async fn next(&mut self, timeout: Duration) -> Result<WsEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .with_context(|| format!("nothing from the socket within {timeout:?}"))?;
            let ev = match msg {
                None | Some(Err(_)) => WsEvent::Ended,
                Some(Ok(Message::Binary(b))) => {
                    self.offset += b.len() as u64;
                    self.output.extend_from_slice(&b);
                    WsEvent::Output(b.to_vec())
                }
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str())?;
                    self.controls.push(v.clone());
                    WsEvent::Control(v)
                }
                Some(Ok(Message::Close(f))) => match f {
                    Some(f) => WsEvent::Close(u16::from(f.code), f.reason.as_str().to_string()),
                    None => WsEvent::Close(1005, String::new()),
                },
                Some(Ok(_)) => continue,
            };
            return Ok(ev);
        }
    }

    /// Reads until the output received so far contains `needle`; returns all output text.
    pub async fn read_until(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let text = String::from_utf8_lossy(&self.output).into_owned();
            if text.contains(needle) {
                return Ok(text);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Ok(WsEvent::Output(_) | WsEvent::Control(_)) => {}
                Ok(other) => bail!("socket ended ({other:?}) before {needle:?}; output: {text:?}"),
                Err(e) => bail!("{e:#} waiting for {needle:?}; output: {text:?}"),
            }
        }
    }

    /// Reads until a close frame (or the end); returns code and reason.
    pub async fn expect_close(&mut self, timeout: Duration) -> Result<(u16, String)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                WsEvent::Close(code, reason) => return Ok((code, reason)),
                WsEvent::Ended => bail!("the socket ended without a close frame"),
                _ => {}
            }
        }
    }

    /// Waits for the next control message of type `kind`.
    pub async fn expect_control(&mut self, kind: &str, timeout: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                WsEvent::Control(v) if v["type"] == kind => return Ok(v),
                WsEvent::Close(code, reason) => bail!("closed ({code} {reason}) before {kind}"),
                WsEvent::Ended => bail!("ended before {kind}"),
                _ => {}
            }
        }
    }

    /// Sends terminal input.
    pub async fn send_input(&mut self, bytes: &[u8]) -> Result<()> {
        self.ws.send(Message::Binary(bytes.to_vec().into())).await?;
        Ok(())
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) -> Result<()> {
        self.ws.send(Message::Text(text.into())).await?;
        Ok(())
    }

    /// Closes the socket normally.
    pub async fn close(mut self) -> Result<()> {
        self.ws.close(None).await?;
        // Read until the server's close reply so the close handshake completes.
        let _ =
            tokio::time::timeout(TIMEOUT, async { while self.ws.next().await.is_some() {} }).await;
        Ok(())
    }

    /// The underlying socket, e.g. to stop reading it.
    pub fn into_inner(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.ws
    }
}
