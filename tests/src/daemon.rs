//! A `ptyd` process in its own temporary directory, for one test.
//!
//! [`Daemon::start`] runs `ptyd --socket <tmp>/ptyd.sock <extra args>` with its stdout
//! and stderr in `<tmp>/ptyd.log`, and returns once a client can connect and complete
//! the handshake. Dropping the `Daemon` kills it with SIGKILL, kills the process groups
//! and the cgroup subtree of the sessions it had started, waits for it, and removes the
//! directory (kept, and its path printed, when `PTYD_TEST_KEEP_LOGS=1`). If the test is
//! panicking, the tail of the log is printed so failures come with the daemon's side of
//! the story.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ipc_proto::Client;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::procfs;
use crate::wait::Backoff;

/// Set to `1` to keep each daemon's temporary directory (socket, log) after the test.
pub const KEEP_LOGS_ENV: &str = "PTYD_TEST_KEEP_LOGS";

/// How long [`Daemon::start`] waits for the socket to accept a handshake by default.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Daemon::stop`] waits for the daemon to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Lines of the log shown in startup errors and when a test panics.
const LOG_TAIL_LINES: usize = 60;

/// How to start a [`Daemon`].
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    /// Extra command-line arguments after `--socket <path>`.
    pub args: Vec<String>,
    /// Extra environment variables, applied last. `RUST_LOG` is `debug` unless the test
    /// process has `RUST_LOG` set or it is given here; `NO_COLOR=1` keeps the log plain.
    pub env: Vec<(String, String)>,
    /// The socket path; `<tmp>/ptyd.sock` when `None`.
    pub socket: Option<PathBuf>,
    /// How long to wait for the first successful handshake.
    pub startup_timeout: Duration,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            args: Vec::new(),
            env: Vec::new(),
            socket: None,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
        }
    }
}

impl DaemonOptions {
    /// Default options: no extra arguments, `RUST_LOG=debug` (see [`DaemonOptions::env`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one command-line argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends command-line arguments, e.g. `["--capacity", "2"]`.
    pub fn args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the daemon.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Uses this socket path instead of `<tmp>/ptyd.sock`.
    pub fn socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.socket = Some(path.into());
        self
    }

    /// Waits this long for the daemon to accept a handshake.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// `--capacity <n>`.
    pub fn capacity(self, n: usize) -> Self {
        self.args(["--capacity".to_string(), n.to_string()])
    }

    /// `--kill-grace <d>`, e.g. `"200ms"`.
    pub fn kill_grace(self, d: &str) -> Self {
        self.args(["--kill-grace", d])
    }

    /// `--idle-timeout <d>`, e.g. `"300ms"`.
    pub fn idle_timeout(self, d: &str) -> Self {
        self.args(["--idle-timeout", d])
    }

    /// `--retention <d>`, e.g. `"5m"`.
    pub fn retention(self, d: &str) -> Self {
        self.args(["--retention", d])
    }

    /// `--allow-group <group>`.
    pub fn allow_group(self, group: &str) -> Self {
        self.args(["--allow-group", group])
    }
}

/// A running `ptyd`, owned by one test.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    /// `None` once kept on purpose (see [`KEEP_LOGS_ENV`]).
    dir: Option<TempDir>,
    dir_path: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    status: Option<ExitStatus>,
}

/// Removes inherited `PTYD_*` variables (`PTYD_CAPACITY`, `PTYD_CONFIG`, …) so the
/// environment of whoever runs the tests cannot change the daemon under test.
fn remove_ptyd_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PTYD_")) {
            cmd.env_remove(key);
        }
    }
}

fn keep_logs() -> bool {
    std::env::var(KEEP_LOGS_ENV).is_ok_and(|v| v == "1")
}

impl Daemon {
    /// Starts ptyd and waits until a client can connect and complete the handshake
    /// (polling 5 ms, 10 ms, … up to 100 ms apart, for at most `opts.startup_timeout`).
    /// Fails with the log's tail if the daemon exits or never becomes ready.
    pub async fn start(opts: DaemonOptions) -> Result<Daemon> {
        let timeout = opts.startup_timeout;
        let mut daemon = Daemon::launch(opts)?;
        daemon.wait_ready(timeout).await?;
        Ok(daemon)
    }

    /// Starts ptyd with default options. Panics (with the reason) if it cannot start.
    pub async fn start_default() -> Daemon {
        match Daemon::start(DaemonOptions::new()).await {
            Ok(d) => d,
            Err(e) => panic!("cannot start ptyd: {e:#}"),
        }
    }

    /// Spawns the ptyd process without waiting for it to be ready (for tests of startup
    /// failures; see [`Daemon::wait_exit`]).
    pub fn launch(opts: DaemonOptions) -> Result<Daemon> {
        let bin = crate::ptyd_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("ptyd-test-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let dir_path = dir.path().to_path_buf();
        let socket = opts.socket.clone().unwrap_or_else(|| dir_path.join("ptyd.sock"));
        let log = dir_path.join("ptyd.log");
        let log_file =
            File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let log_file2 = log_file.try_clone()?;
        let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "debug".to_string());
        let mut cmd = Command::new(&bin);
        remove_ptyd_env(&mut cmd);
        cmd.arg("--socket")
            .arg(&socket)
            .args(&opts.args)
            .env("RUST_LOG", rust_log)
            // Plain text in the log file, so tests can match `key=value` fields.
            .env("NO_COLOR", "1")
            // Nothing may reach the user's real runtime directory or daemon.
            .env("XDG_RUNTIME_DIR", &dir_path)
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&dir_path)
            .stdin(Stdio::null())
                .stdout(log_file)
            .stderr(log_file2);
        let child = cmd.spawn().with_context(|| format!("cannot run {}", bin.display()))?;
        let keep = keep_logs();
        if keep {
            eprintln!("ptyd pid {} logs to {} (kept)", child.id(), log.display());
        }
        Ok(Daemon { child, dir: Some(dir), dir_path, socket, log, status: None })
    }

    /// Waits until a client can connect to the socket and complete the handshake.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let mut backoff = Backoff::new(timeout);
        loop {
            let err = match Client::connect(&self.socket).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if let Some(status) = self.try_wait()? {
                bail!(
                    "ptyd exited during startup ({status}); last log lines:\n{}",
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            match backoff.next_delay() {
                Some(delay) => tokio::time::sleep(delay).await,
                None => bail!(
                    "ptyd did not accept a handshake on {} within {timeout:?} (last error: \
                     {err}); last log lines:\n{}",
                    self.socket.display(),
                    self.log_tail(LOG_TAIL_LINES)
                ),
            }
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The temporary directory holding the socket and the log.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// The log file path.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A new connection (handshake done). Panics with the log's tail on failure.
    pub async fn client(&self) -> Client {
        match self.try_client().await {
            Ok(c) => c,
            Err(e) => panic!("{e:#}"),
        }
    }

    /// A new connection (handshake done).
    pub async fn try_client(&self) -> Result<Client> {
        Client::connect(&self.socket).await.with_context(|| {
            format!(
                "cannot connect to ptyd at {}; last log lines:\n{}",
                self.socket.display(),
                self.log_tail(LOG_TAIL_LINES)
            )
        })
    }

    /// Everything the daemon has logged so far (stdout and stderr, lossy UTF-8).
    pub fn log(&self) -> String {
        crate::logfile::read(&self.log)
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        crate::logfile::tail(&self.log, n)
    }

    /// Waits until the log contains `needle`; returns the log. Fails with the log's tail
    /// after `timeout`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<String> {
        crate::logfile::wait_for(&self.log, "ptyd", needle, timeout, LOG_TAIL_LINES).await
    }

    /// A `ptyctl --socket <socket> <args…>` command, with `PTYD_SOCKET` also pointing at
    /// this daemon. Panics if ptyctl has not been built.
    pub fn ptyctl<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let bin = match crate::ptyctl_bin() {
            Ok(bin) => bin,
            Err(e) => panic!("{e:#}"),
        };
        let mut cmd = Command::new(bin);
        remove_ptyd_env(&mut cmd);
        cmd.arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env("PTYD_SOCKET", &self.socket)
            .env("XDG_RUNTIME_DIR", &self.dir_path)
            .stdin(Stdio::null());
        cmd
    }

    /// This daemon's subtree of session cgroups (`<its cgroup>/ptyd-<pid>`), when it
    /// runs sessions in cgroups (it does not with `--cgroup off` or without a writable
    /// cgroup v2 hierarchy).
    pub fn cgroup_subtree(&self) -> Option<PathBuf> {
        let own = procfs::cgroup_dir(self.pid())?;
        // A ptyd that had to enable controllers moved itself into the leaf `daemon/`.
        let base = match own.file_name().and_then(|n| n.to_str()) {
            Some("daemon") => own.parent()?.to_path_buf(),
            _ => own,
        };
        Some(base.join(format!("ptyd-{}", self.pid()))).filter(|dir| dir.is_dir())
    }

    /// The cgroup of session `id` (which exists while the session runs).
    pub fn session_cgroup(&self, id: ipc_proto::SessionId) -> Option<PathBuf> {
        Some(self.cgroup_subtree()?.join(format!("session-{id}")))
    }

    /// Sends `signal` to the daemon process.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        kill(Pid::from_raw(self.pid() as i32), signal)
            .with_context(|| format!("cannot send {signal} to ptyd"))
    }

    /// The exit status if the daemon has exited (reaping it), `None` while it runs.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait().context("cannot wait for ptyd")?;
        }
        Ok(self.status)
    }

    /// Waits for the daemon to exit on its own; fails after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let mut backoff = Backoff::new(timeout);
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            match backoff.next_delay() {
                Some(delay) => tokio::time::sleep(delay).await,
                None => bail!(
                    "ptyd still running after {timeout:?}; last log lines:\n{}",
                    self.log_tail(LOG_TAIL_LINES)
                ),
            }
        }
    }

    /// Sends SIGTERM and waits (at most [`STOP_TIMEOUT`]) for the graceful shutdown;
    /// returns the exit status.
    pub async fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        self.signal(Signal::SIGTERM)?;
        self.wait_exit(STOP_TIMEOUT).await
    }

    /// [`Daemon::stop`] for synchronous tests: blocks the thread while waiting.
    pub fn stop_blocking(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        self.signal(Signal::SIGTERM)?;
        let mut backoff = Backoff::new(STOP_TIMEOUT);
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            match backoff.next_delay() {
                Some(delay) => std::thread::sleep(delay),
                None => bail!(
                    "ptyd still running {STOP_TIMEOUT:?} after SIGTERM; last log lines:\n{}",
                    self.log_tail(LOG_TAIL_LINES)
                ),
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = self.pid();
        if self.status.is_none() {
            // Sessions are process-group leaders (setsid); note them before the daemon
            // dies and they are reparented away.
            let groups: Vec<u32> = procfs::children_of(pid)
                .into_iter()
                .filter_map(|(kid, _, _)| procfs::proc_stat(kid))
                .filter(|s| s.pgrp == s.pid)
                .map(|s| s.pgrp)
                .collect();
            let subtree = self.cgroup_subtree();
            let _ = self.child.kill();
            let _ = self.child.wait();
            let own_group = nix::unistd::getpgrp().as_raw() as u32;
            for group in groups.into_iter().filter(|g| *g != own_group) {
                let _ = killpg(Pid::from_raw(group as i32), Signal::SIGKILL);
            }
            // Processes that left their session's group are still in its cgroup.
            if let Some(subtree) = subtree {
                procfs::kill_and_remove_cgroup(&subtree);
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "---- ptyd (pid {pid}) log tail, {} ----\n{}\n---- end of ptyd log ----",
                self.log.display(),
                self.log_tail(LOG_TAIL_LINES)
            );
        }
        if keep_logs() {
            if let Some(dir) = self.dir.take() {
                let path = dir.keep();
                eprintln!("kept ptyd test directory {}", path.display());
            }
        }
    }
}
