//! Acting as another local user: `nobody:nogroup` through `setpriv` (util-linux), for
//! tests that show what a foreign uid can and cannot do with a daemon run as root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::{bail, Context, Result};
use nix::unistd::{Group, Uid, User};

use crate::{Daemon, TIMEOUT};

/// The other user.
pub const OUTSIDER: &str = "nobody";
/// Its group.
pub const OUTSIDER_GROUP: &str = "nogroup";

/// `setpriv` from PATH.
pub fn setpriv() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join("setpriv")).find(|p| p.is_file()).context(
        "setpriv not found in PATH: these tests switch to the nobody user with setpriv \
             from util-linux (apt-get install util-linux)",
    )
}

/// The outsider's uid (and a check that its group exists).
pub fn outsider_uid() -> Result<u32> {
    let user = User::from_name(OUTSIDER)?.with_context(|| format!("no user {OUTSIDER}"))?;
    Group::from_name(OUTSIDER_GROUP)?.with_context(|| format!("no group {OUTSIDER_GROUP}"))?;
    Ok(user.uid.as_raw())
}

/// Fails unless the test runs as root (only root can become another user).
pub fn require_root() -> Result<()> {
    if !Uid::effective().is_root() {
        bail!("this test must run as root to connect as {OUTSIDER} with setpriv");
    }
    Ok(())
}

/// Whether a user that is neither the owner nor in the group can execute `path`:
/// the file is world-executable and every directory above it world-searchable.
pub fn executable_by_others(path: &Path) -> bool {
    let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode()).unwrap_or(0);
    mode(path) & 0o001 != 0 && path.ancestors().skip(1).all(|dir| mode(dir) & 0o001 != 0)
}

/// Opens the daemon to everybody at the file-system level: its directory 0755 and its
/// socket 0777, so only the credential check stands between `nobody` and the daemon.
/// Returns a ptyctl that `nobody` can execute.
pub fn open_up(daemon: &Daemon) -> Result<PathBuf> {
    std::fs::set_permissions(daemon.dir(), std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(daemon.socket(), std::fs::Permissions::from_mode(0o777))?;
    let ptyctl = crate::ptyctl_bin()?;
    if executable_by_others(&ptyctl) {
        return Ok(ptyctl);
    }
    let copy = daemon.dir().join("ptyctl");
    std::fs::copy(&ptyctl, &copy)
        .with_context(|| format!("cannot copy {} for {OUTSIDER}", ptyctl.display()))?;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))?;
    Ok(copy)
}

/// Runs `ptyctl --socket <socket> ARGS` as nobody:nogroup with no supplementary groups;
/// returns its pid (the peer pid the daemon sees: setpriv execs ptyctl) and its output.
pub async fn ptyctl_as_outsider(
    ptyctl: &Path,
    daemon: &Daemon,
    args: &[&str],
) -> Result<(u32, Output)> {
    let child = tokio::process::Command::new(setpriv()?)
        .arg(format!("--reuid={OUTSIDER}"))
        .arg(format!("--regid={OUTSIDER_GROUP}"))
        .arg("--clear-groups")
        .arg(ptyctl)
        .arg("--socket")
        .arg(daemon.socket())
        .args(args)
        .env_remove("PTYD_SOCKET")
        .env_remove("PTYD_CONFIG")
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot run setpriv")?;
    let pid = child.id().context("setpriv exited before its pid was read")?;
    let output = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .with_context(|| format!("ptyctl {args:?} as {OUTSIDER} did not finish"))??;
    Ok((pid, output))
}
