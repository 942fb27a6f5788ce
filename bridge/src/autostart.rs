//! Starting ptyd when none answers: found next to our own executable or in `PATH`, run in
//! a session of its own so it outlives the bridge, logging to `ptyd.log` beside its socket.
//!
//! This module holds the crate's only `unsafe`: `setsid()` between fork and exec, which
//! the standard library offers only through `pre_exec`.
#![allow(unsafe_code)]

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use ipc_proto::Client;
use tokio::time::Instant;

/// How to find and start ptyd.
#[derive(Debug, Clone)]
pub struct Autostart {
    /// The socket ptyd should serve.
    pub socket: PathBuf,
    /// An explicit ptyd binary (`--ptyd-bin`).
    pub ptyd_bin: Option<PathBuf>,
    /// The shared TOML file, passed on so ptyd reads its `[daemon]` table.
    pub config: Option<PathBuf>,
    /// How long the new daemon has to answer.
    pub timeout: Duration,
}

/// Where ptyd's binary is: `explicit`, else next to `own_exe`, else the first in `path`.
pub fn find_ptyd(
    explicit: Option<&Path>,
    own_exe: Option<&Path>,
    path: Option<&std::ffi::OsStr>,
) -> anyhow::Result<PathBuf> {
    if let Some(bin) = explicit {
        if bin.is_file() {
            return Ok(bin.to_path_buf());
        }
        bail!("--ptyd-bin {} is not a file", bin.display());
    }
    if let Some(sibling) = own_exe.and_then(Path::parent).map(|dir| dir.join("ptyd")) {
        if sibling.is_file() {
            return Ok(sibling);
        }
    }
    if let Some(found) = path
        .into_iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("ptyd"))
        .find(|p| p.is_file())
    {
        return Ok(found);
    }
    bail!("cannot find ptyd next to this executable or in PATH; pass --ptyd-bin")
}

/// Variables systemd hands the bridge, and the bridge's secrets, that must not reach a
/// ptyd it starts (nor, through it, every shell).
const SYSTEMD_ENV: &[&str] = &[
    "PTYD_BRIDGE_TOKEN",
    "CREDENTIALS_DIRECTORY",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
];

/// Makes sure a ptyd answers on `opts.socket`, starting one if needed. Returns the pid of
/// the daemon it started, `None` when one was already there.
pub async fn ensure_daemon(opts: &Autostart) -> anyhow::Result<Option<u32>> {
    if Client::connect(&opts.socket).await.is_ok() {
        return Ok(None);
    }
    let exe = std::env::current_exe().ok();
    let bin =
        find_ptyd(opts.ptyd_bin.as_deref(), exe.as_deref(), std::env::var_os("PATH").as_deref())?;
    let dir = opts.socket.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let log_path = dir.join("ptyd.log");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.arg("--socket").arg(&opts.socket);
    if let Some(config) = &opts.config {
        cmd.arg("--config").arg(config);
    }
    // systemd's handshake variables are the bridge's; a ptyd that inherited them would
    // report readiness (or take sockets) on the bridge's behalf.
    for var in SYSTEMD_ENV {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).kill_on_drop(false);
    // SAFETY: setsid() is async-signal-safe and touches no memory of the parent; it only
    // fails when the child already leads a process group, which a fresh fork never does.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(std::io::Error::from));
    }
    let mut child = cmd.spawn().with_context(|| format!("running {}", bin.display()))?;
    let pid = child.id().unwrap_or_default();
    tracing::info!(
        pid,
        bin = %bin.display(),
        socket = %opts.socket.display(),
        log = %log_path.display(),
        "no ptyd answered; started one"
    );
    let deadline = Instant::now() + opts.timeout;
    let mut delay = Duration::from_millis(10);
    loop {
        match Client::connect(&opts.socket).await {
            Ok(_) => return Ok(Some(pid)),
            Err(e) => {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "ptyd exited ({status}) before answering on {}; see {}",
                        opts.socket.display(),
                        log_path.display()
                    );
                }
                if Instant::now() >= deadline {
                    bail!(
                        "ptyd (pid {pid}) did not answer within {:?}: {e}; see {}",
                        opts.timeout,
                        log_path.display()
                    );
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
    // Dropping `child` leaves ptyd running; tokio reaps it should it exit while we live.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ptyd_next_to_the_executable_then_in_path() {
        let dir = std::env::temp_dir().join(format!("ptyd-bridge-find-{}", std::process::id()));
        let (own, other) = (dir.join("own"), dir.join("other"));
        std::fs::create_dir_all(&own).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("ptyd"), "").unwrap();
        let exe = own.join("ptyd-bridge");
        let path = std::env::join_paths([&own, &other]).unwrap();
        assert_eq!(find_ptyd(None, Some(&exe), Some(&path)).unwrap(), other.join("ptyd"));
        std::fs::write(own.join("ptyd"), "").unwrap();
        assert_eq!(find_ptyd(None, Some(&exe), Some(&path)).unwrap(), own.join("ptyd"));
        assert!(find_ptyd(Some(&dir.join("nope")), Some(&exe), None).is_err());
        assert!(find_ptyd(None, None, None).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
