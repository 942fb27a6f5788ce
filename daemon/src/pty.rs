//! Creating a PTY with a child on it, the RAII handle that owns its slot, and the
//! named threads that move its bytes.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use portable_pty::{native_pty_system, CommandBuilder, MasterPty, PtySize};
use tokio::sync::OwnedSemaphorePermit;

use crate::reaper::Reaper;

/// What to run, and where.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    /// Program (PATH lookup) or path.
    pub command: String,
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// Variables set on top of the daemon's environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: Option<String>,
    /// Initial size.
    pub cols: u16,
    /// Initial size.
    pub rows: u16,
}

/// A freshly spawned child on a new PTY.
pub struct Spawned {
    /// The child's pid, also its process group and session id (portable-pty calls setsid).
    pub pid: u32,
    /// The master side, kept for resizing.
    pub master: Box<dyn MasterPty + Send>,
    /// A reader on the master, for the reader thread.
    pub reader: Box<dyn Read + Send>,
    /// The writer on the master, for the writer thread.
    pub writer: Box<dyn Write + Send>,
    /// Resolves with the child's status once the reaper collects it.
    pub exit: tokio::sync::oneshot::Receiver<ipc_proto::ExitStatus>,
}

/// Opens a PTY and starts `spec` on it. Blocking (fork + exec): call off the runtime.
pub fn spawn(spec: &SpawnSpec, reaper: &Reaper) -> Result<Spawned, String> {
    if let Some(cwd) = &spec.cwd {
        // portable-pty would silently fall back to $HOME; a bad cwd must be an error.
        match std::fs::metadata(cwd) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(format!("cwd {cwd}: Not a directory")),
            Err(e) => return Err(format!("cwd {cwd}: {e}")),
        }
    }
    if !spec.command.contains('/') && find_in_path(&spec.command, &spec.env).is_none() {
        return Err(format!("{}: command not found in PATH", spec.command));
    }
    let size = PtySize { rows: spec.rows, cols: spec.cols, pixel_width: 0, pixel_height: 0 };
    let pair =
        native_pty_system().openpty(size).map_err(|e| format!("openpty: {}", os_error_text(&e)))?;

    let mut cmd = CommandBuilder::new(&spec.command);
    cmd.args(&spec.args);
    cmd.env("TERM", "xterm-256color");
    // systemd's hand-over variables are for ptyd, not for the programs it runs.
    for name in crate::systemd::PRIVATE_ENV {
        cmd.env_remove(name);
    }
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    let cwd = match &spec.cwd {
        Some(cwd) => Path::new(cwd).to_path_buf(),
        None => std::env::current_dir().map_err(|e| format!("daemon cwd: {e}"))?,
    };
    cmd.cwd(cwd);

    let (_, pid, exit) = reaper.spawn_child(|| {
        let child = pair.slave.spawn_command(cmd).map_err(|e| format!("{e:#}"))?;
        let pid = child.process_id().ok_or("child has no pid")?;
        // Reaping is the reaper's job; the Child object is not needed past this point.
        Ok(((), pid))
    })?;
    // Only the child may hold the slave, so that its exit ends our reads with EIO.
    drop(pair.slave);
    // Until the session is fully built, a failure must not leave the child running.
    let group = scopeguard::guard(pid, |pid| {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    });
    let reader = pair.master.try_clone_reader().map_err(|e| format!("clone pty reader: {e:#}"))?;
    let writer = pair.master.take_writer().map_err(|e| format!("take pty writer: {e:#}"))?;
    let pid = scopeguard::ScopeGuard::into_inner(group);
    Ok(Spawned { pid, master: pair.master, reader, writer, exit })
}

/// Looks `command` up in the child's PATH (the spawn's own, else the daemon's).
fn find_in_path(command: &str, env: &[(String, String)]) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.into())
        .or_else(|| std::env::var_os("PATH"))?;
    std::env::split_paths(&path).map(|dir| dir.join(command)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// portable-pty reports openpty failures with the OS error in Debug form; turn
/// `Os { code: 24, .. }` back into "Too many open files (os error 24)".
fn os_error_text(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    let code = text
        .split("code: ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse::<i32>().ok());
    match code {
        Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
        None => text,
    }
}

/// Owns a session's pool slot and its process group. Dropping it frees the slot exactly
/// once and, unless the group was already cleaned up, SIGKILLs whatever is left of it, so
/// an early return or a panic cannot orphan processes. It never blocks: reaping is the
/// reaper's job.
#[derive(Debug)]
pub struct PtyHandle {
    pgid: Pid,
    cleaned: bool,
    _permit: OwnedSemaphorePermit,
}

impl PtyHandle {
    /// Takes ownership of `pid`'s process group and the pool slot `permit`.
    pub fn new(pid: u32, permit: OwnedSemaphorePermit) -> Self {
        PtyHandle { pgid: Pid::from_raw(pid as i32), cleaned: false, _permit: permit }
    }

    /// Sends `signal` to the whole process group; false when the group no longer exists.
    pub fn signal_group(&self, signal: Signal) -> bool {
        !matches!(killpg(self.pgid, signal), Err(nix::errno::Errno::ESRCH))
    }

    /// True while any process of the group is alive (or a zombie not yet reaped).
    pub fn group_exists(&self) -> bool {
        !matches!(killpg(self.pgid, None), Err(nix::errno::Errno::ESRCH))
    }

    /// Ends what is left of the group after its leader exited: SIGHUP (and SIGCONT, so
    /// stopped jobs see it), then SIGKILL after `grace` if anything is still there.
    pub async fn clean_up_group(&mut self, grace: Duration) {
        if self.group_exists() {
            tracing::debug!(
                pgid = self.pgid.as_raw(),
                "process group outlived its leader; sending SIGHUP"
            );
            self.signal_group(Signal::SIGHUP);
            self.signal_group(Signal::SIGCONT);
            tokio::time::sleep(grace).await;
            if self.signal_group(Signal::SIGKILL) {
                tracing::info!(
                    pgid = self.pgid.as_raw(),
                    "process group ignored SIGHUP; sent SIGKILL"
                );
            }
        }
        self.cleaned = true;
    }
}

impl Drop for PtyHandle {
    fn drop(&mut self) {
        if !self.cleaned {
            let _ = killpg(self.pgid, Signal::SIGKILL);
        }
    }
}

/// Reads the master until EOF (or EIO, which Linux returns once the slave is closed)
/// on a thread named `pty-reader-<id>`, passing each chunk to `sink`. `done` runs last.
pub fn start_reader(
    id: &str,
    mut reader: Box<dyn Read + Send>,
    sink: impl Fn(&[u8]) + Send + 'static,
    done: impl FnOnce() + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new().name(format!("pty-reader-{id}")).spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => sink(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        done();
    })?;
    Ok(())
}

/// Writes queued input to the master on a thread named `pty-writer-<id>`, until every
/// sender is gone. A child that does not read its input blocks only this thread.
pub fn start_writer(
    id: &str,
    mut writer: Box<dyn Write + Send>,
    input: flume::Receiver<Bytes>,
) -> std::io::Result<()> {
    std::thread::Builder::new().name(format!("pty-writer-{id}")).spawn(move || {
        for data in input.iter() {
            if writer.write_all(&data).and_then(|_| writer.flush()).is_err() {
                break;
            }
        }
    })?;
    Ok(())
}
