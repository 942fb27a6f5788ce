//! A ptyd started by another process keeps none of the descriptors its parent left open
//! (the `flock L ptyd …` case: a CI lock held for as long as the daemon lived), and the
//! programs it runs get nothing but their terminal on 0, 1 and 2.

use std::fs::{File, OpenOptions};
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{ensure, Result};
use ipc_proto::SpawnRequest;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, Flock, FlockArg, OFlag};
use ptyd_tests::{fd_targets, read_until, Daemon, DaemonOptions, TIMEOUT};

/// Lets `fd` be inherited by the next program this process starts (close-on-exec off).
fn inheritable(fd: &impl AsRawFd) -> Result<()> {
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::empty()))?;
    Ok(())
}

fn lock(file: File) -> Result<Flock<File>> {
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| e.into())
}

// One test in this binary: while it runs, this process holds descriptors that every
// program it starts inherits, which must not reach another test's daemon.
#[tokio::test]
async fn a_daemon_keeps_nothing_its_parent_left_open() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let lock_path = dir.path().join("ci.lock");
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path)?;
    // Never dropped, so never unlocked: like flock(1), the lock is left to whoever
    // inherits the descriptor, and this process only closes its own copy.
    let held = ManuallyDrop::new(lock(file)?);
    let lock_fd = held.as_raw_fd();
    inheritable(&lock_fd)?;
    let (pipe_read, pipe_write): (OwnedFd, OwnedFd) = nix::unistd::pipe()?;
    fcntl(pipe_read.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    fcntl(pipe_read.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    inheritable(&pipe_write)?;
    let pipe_inode = nix::sys::stat::fstat(pipe_read.as_raw_fd())?.st_ino;

    let launched = Daemon::start(DaemonOptions::new()).await;
    // The daemon has its copies now (or failed); this process keeps only the read end.
    nix::unistd::close(lock_fd)?;
    drop(pipe_write);
    let daemon = launched?;

    let fds = fd_targets(daemon.pid())?;
    let pipe = format!("pipe:[{pipe_inode}]");
    let lock_name = lock_path.display().to_string();
    ensure!(
        fds.iter().all(|(_, target)| *target != pipe && *target != lock_name),
        "ptyd still holds its parent's descriptors: {fds:?}"
    );
    // The lock is free at once, and the pipe's reader sees end-of-file, while ptyd runs.
    let again = OpenOptions::new().write(true).open(&lock_path)?;
    ensure!(lock(again).is_ok(), "the lock is still held while ptyd runs");
    let mut byte = [0u8; 1];
    let read = nix::unistd::read(pipe_read.as_raw_fd(), &mut byte);
    ensure!(read == Ok(0), "the pipe still has a writer (ptyd?): {read:?}");

    // The programs ptyd runs hold their terminal and nothing else.
    let client = daemon.client().await;
    let spawned = client.spawn(SpawnRequest::new("sh", ["-c", "echo ready; read x"])).await?;
    let mut att = client.attach(spawned.session, Some(0), false).await?;
    // "ready" comes once the shell's own start-up (the loader) closed what it opened.
    read_until(&mut att, "ready", TIMEOUT).await?;
    let child = fd_targets(spawned.pid)?;
    ensure!(
        child.len() == 3
            && child.iter().all(|(fd, t)| (0..=2).contains(fd) && t.starts_with("/dev/pts/")),
        "expected only 0/1/2 on the session's pty slave, got {child:?}"
    );
    client.kill(spawned.session, None).await?;
    client.wait(spawned.session, Some(TIMEOUT)).await?;
    Ok(())
}
