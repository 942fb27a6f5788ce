//! The new image's side of a live upgrade: take the handover state it was exec'd with,
//! keep exactly the descriptors it names (closing everything else inherited, and marking
//! the kept ones close-on-exec again before any child can be started), and, if it cannot
//! go on with them, go back to the old binary with the same state.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};

use bytes::BytesMut;
use ipc_proto::{DaemonMessage, ErrorCode, ErrorReply, Frame, FrameCodec, Request, UpgradeReply};
use tokio_util::codec::Encoder;

use super::state::{self, LoadError, Loaded, HANDOVER_ENV};
use super::{fd_flags, set_cloexec};

/// Set, in the image a failed upgrade came back to, to why it failed.
pub const FAILED_ENV: &str = "PTYD_HANDOVER_FAILED";

/// The state this image was started with by a live upgrade.
pub struct Adoption {
    /// The state.
    pub loaded: Loaded,
    /// Its memory file.
    memfd: File,
    /// When this image is the old binary back after a failed upgrade: why it failed.
    pub failed: Option<String>,
}

/// The handover this image was exec'd with, if any: `None` on an ordinary start.
///
/// # Safety
/// Call first thing in `main`, single-threaded, before anything owns a descriptor above 2.
#[allow(unsafe_code)]
pub unsafe fn take() -> Option<Result<Adoption, LoadError>> {
    // SAFETY: the caller's contract.
    let mut memfd = match unsafe { state::take_from_env() }? {
        Ok(file) => file,
        Err(e) => return Some(Err(e)),
    };
    let failed = std::env::var(FAILED_ENV).ok();
    // SAFETY: still single-threaded.
    unsafe { std::env::remove_var(FAILED_ENV) };
    Some(state::read(&mut memfd).map(|loaded| Adoption { loaded, memfd, failed }))
}

impl Drop for Adoption {
    /// Once the new image serves, the way back and the state itself are let go.
    fn drop(&mut self) {
        if let Some(fd) = self.loaded.header.fallback_fd {
            let _ = nix::unistd::close(fd);
        }
    }
}

impl Adoption {
    /// Every descriptor this image keeps: the state's own and those it names.
    fn kept(&self) -> Vec<RawFd> {
        let mut fds = self.loaded.header.descriptors();
        fds.push(self.memfd.as_raw_fd());
        fds
    }

    /// Closes every inherited descriptor but the kept ones, checks that each of those is
    /// open, and marks them close-on-exec. Call first thing in `main`, like
    /// [`crate::fds::close_inherited`].
    pub fn secure_descriptors(&self) -> Result<(), String> {
        let kept = self.kept();
        crate::fds::close_inherited_except(&kept);
        for fd in kept {
            if fd_flags(fd).is_none() {
                return Err(format!("descriptor {fd} named in the handover state is not open"));
            }
            set_cloexec(fd).map_err(|e| format!("descriptor {fd}: close-on-exec: {e}"))?;
        }
        Ok(())
    }

    /// Takes the listening socket over.
    pub fn listener(&self) -> io::Result<UnixListener> {
        let fd = self.loaded.header.listener_fd;
        // SAFETY: named by the state and checked open; nothing else in this image owns it.
        #[allow(unsafe_code)]
        let listener = UnixListener::from(unsafe { OwnedFd::from_raw_fd(fd) });
        listener.set_nonblocking(true)?;
        Ok(listener)
    }

    /// Takes a session's PTY master over.
    pub fn master(&self, fd: RawFd) -> OwnedFd {
        // SAFETY: named by the state and checked open; taken once per session.
        #[allow(unsafe_code)]
        unsafe {
            OwnedFd::from_raw_fd(fd)
        }
    }

    /// Answers the `upgrade` request that started this image, then closes its connection:
    /// success, or (in the old binary back after a failure) why it failed.
    pub fn answer(&self, reply: Result<UpgradeReply, String>) {
        let Some(pending) = self.loaded.header.reply else { return };
        // SAFETY: named by the state and checked open; answered once, here.
        #[allow(unsafe_code)]
        let stream = UnixStream::from(unsafe { OwnedFd::from_raw_fd(pending.fd) });
        let body = match reply {
            Ok(r) => DaemonMessage::Upgraded(r),
            Err(message) => {
                DaemonMessage::Error(ErrorReply { code: ErrorCode::UpgradeFailed, message })
            }
        };
        let mut buf = BytesMut::new();
        let mut codec = FrameCodec::<Request, DaemonMessage>::default();
        if let Err(e) = codec.encode(Frame::new(pending.id, body), &mut buf) {
            tracing::warn!("cannot encode the upgrade's answer: {e}");
            return;
        }
        let write = || -> io::Result<()> {
            stream.set_nonblocking(false)?;
            stream.set_write_timeout(Some(std::time::Duration::from_secs(2)))?;
            io::Write::write_all(&mut &stream, &buf)?;
            stream.shutdown(std::net::Shutdown::Write)
        };
        if let Err(e) = write() {
            tracing::warn!("cannot answer the upgrade request: {e}");
        }
    }

    /// Goes back to the binary the upgrade came from, with the same state, telling it
    /// `why`. Returns only if that is impossible.
    pub fn fall_back(&self, why: &str) -> io::Error {
        if let Some(first) = &self.failed {
            // This is the old binary back already: going back again would loop.
            return io::Error::other(format!("already back on the old binary after: {first}"));
        }
        let Some(fd) = self.loaded.header.fallback_fd else {
            return io::Error::other("the old image left no binary to go back to");
        };
        let build = || -> io::Result<(Vec<CString>, Vec<CString>)> {
            // The descriptors cross once more: close-on-exec off again.
            for fd in self.kept() {
                let flags = nix::fcntl::FdFlag::empty();
                nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(flags))?;
            }
            let added = [
                format!("{HANDOVER_ENV}={}", self.memfd.as_raw_fd()),
                // A reason with a NUL would not pass; it cannot have one, but be total.
                format!("{FAILED_ENV}={}", why.replace('\0', " ")),
            ];
            super::exec_parts(&[HANDOVER_ENV, FAILED_ENV], &added)
        };
        let (args, env) = match build() {
            Ok(parts) => parts,
            Err(e) => return e,
        };
        match nix::unistd::fexecve(fd, &args, &env) {
            Ok(never) => match never {},
            Err(e) => io::Error::from(e),
        }
    }
}
