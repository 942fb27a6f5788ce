//! The handover state: everything one daemon image passes to the next so that its
//! sessions go on, in a sealed memory file (memfd) that no other user can open and no
//! one can change once written.
//!
//! Layout: the magic `PTYDHAND`, a little-endian `u32` header length, the header as JSON
//! ([`Handover`]), then the payload: the bytes each [`Blob`] of the header points into
//! (output rings and screens). Descriptors named in the header (the listener, PTY
//! masters, the connection that asked) cross the `execve` open; the header only says
//! which numbers they have.
//!
//! Compatibility rule: [`HANDOVER_VERSION`] changes whenever the header's meaning does;
//! an image loads exactly the versions in [`LOADS`], and `ptyd --handover-check` says so
//! before any image is replaced. Fields added with a default keep the version.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use ipc_proto::{ExitStatus, SessionId};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use serde::{Deserialize, Serialize};

use crate::admission::Class;
use crate::session::lifecycle::EndReason;
use crate::session::marks::ShellState;
use crate::shell_integration::Integration;

/// The version of the handover state this image writes.
pub const HANDOVER_VERSION: u32 = 1;
/// The versions this image can load.
pub const LOADS: std::ops::RangeInclusive<u32> = 1..=1;
/// The environment variable naming the state's descriptor in the new image.
pub const HANDOVER_ENV: &str = "PTYD_HANDOVER_FD";

const MAGIC: &[u8; 8] = b"PTYDHAND";
/// A header larger than this is not a ptyd's.
const MAX_HEADER: u32 = 256 << 20;

/// A range of the payload.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Blob {
    /// Offset into the payload.
    pub at: u64,
    /// Length.
    pub len: u64,
}

/// A request to answer from the next image: the connection's descriptor and the id.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct PendingReply {
    /// The client's socket.
    pub fd: RawFd,
    /// The request id to answer.
    pub id: u64,
}

/// The daemon's state at the handover.
#[derive(Debug, Serialize, Deserialize)]
pub struct Handover {
    /// [`HANDOVER_VERSION`] of the image that wrote it.
    pub version: u32,
    /// The release of the image that wrote it.
    pub from_version: String,
    /// Its binary.
    pub from_binary: String,
    /// The binary asked to take over.
    pub to_binary: String,
    /// When the daemon process first started (ms since the epoch).
    pub started_at_ms: u64,
    /// Upgrades so far, this one included.
    pub upgrades: u32,
    /// When the upgrade was asked for (ms since the epoch).
    pub requested_at_ms: u64,
    /// The listening socket.
    pub listener_fd: RawFd,
    /// The socket's path when ptyd bound it itself (and so removes it at exit); `None`
    /// when systemd owns it.
    pub socket_path: Option<PathBuf>,
    /// The `upgrade` request to answer.
    pub reply: Option<PendingReply>,
    /// The old image's binary, opened: where a new image that cannot load the state
    /// goes back to.
    pub fallback_fd: Option<RawFd>,
    /// Why this image is the fallback of a failed upgrade, when it is.
    #[serde(default)]
    pub failed: Option<String>,
    /// Every session, running and retained.
    pub sessions: Vec<SessionRecord>,
}

/// One session as it crosses.
#[derive(Debug, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: SessionId,
    pub pid: u32,
    pub command: String,
    pub args: Vec<String>,
    pub cwd: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub idle_timeout_ms: u64,
    pub integration: Integration,
    pub replay_bytes: usize,
    pub scrollback_lines: Option<usize>,
    pub cols: u16,
    pub rows: u16,
    pub created_at_ms: u64,
    pub activity_ms: u64,
    pub output_ms: u64,
    pub input_mark: u64,
    /// Offset of the ring's first byte.
    pub ring_start: u64,
    /// The ring's bytes; the output end is `ring_start + ring.len`.
    pub ring: Blob,
    /// Bytes that reproduce the screen (with its history) at the output end.
    pub screen: Option<Blob>,
    pub shell: ShellState,
    pub paste: bool,
    /// Who spawned it, for the pool's per-uid and interactive shares.
    pub uid: u32,
    pub gid: u32,
    pub class: Class,
    /// Its cgroup directory, when it has one.
    pub cgroup: Option<PathBuf>,
    /// Spawned with `close_with_connection`: its connection is gone with the old image.
    pub owned: bool,
    /// The PTY master while the program runs.
    pub master_fd: Option<RawFd>,
    /// How it ended, once it has.
    pub exit: Option<ExitStatus>,
    /// Why it ended or is ending.
    pub end: Option<EndReason>,
    /// A client held a lease on it (its connection closes with the old image).
    #[serde(default)]
    pub leased: bool,
    /// Upgrades it crossed before this one.
    #[serde(default)]
    pub upgrades: u32,
}

impl Handover {
    /// Every descriptor the state names, which must stay open in the new image.
    pub fn descriptors(&self) -> Vec<RawFd> {
        let mut fds = vec![self.listener_fd];
        fds.extend(self.reply.map(|r| r.fd));
        fds.extend(self.fallback_fd);
        fds.extend(self.sessions.iter().filter_map(|s| s.master_fd));
        fds
    }
}

/// The state with its payload.
pub struct Written {
    /// The sealed memory file.
    pub file: File,
    /// Its size.
    pub len: u64,
}

/// Writes `header` and `payload` to a new sealed memory file (close-on-exec).
pub fn write(header: &Handover, payload: &[u8]) -> io::Result<Written> {
    let json = serde_json::to_vec(header).map_err(io::Error::other)?;
    let fd = memfd_create(
        c"ptyd-handover",
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )?;
    let mut file = File::from(fd);
    file.write_all(MAGIC)?;
    file.write_all(&(json.len() as u32).to_le_bytes())?;
    file.write_all(&json)?;
    file.write_all(payload)?;
    let len = file.stream_position()?;
    let seals = SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_SEAL;
    fcntl(file.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals))?;
    Ok(Written { file, len })
}

/// Why a state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not a handover state at all.
    #[error("not a ptyd handover state: {0}")]
    Format(String),
    /// A state of a version this image does not load.
    #[error(
        "handover state version {found} written by ptyd {writer}; this ptyd {ours} loads \
         versions {}..={}",
        LOADS.start(),
        LOADS.end()
    )]
    Version {
        /// In the state.
        found: u32,
        /// The release that wrote it.
        writer: String,
        /// This release.
        ours: &'static str,
    },
    /// Reading failed.
    #[error("reading the handover state: {0}")]
    Io(#[from] io::Error),
}

/// A loaded state.
pub struct Loaded {
    /// The header.
    pub header: Handover,
    /// The payload the blobs point into.
    pub payload: Vec<u8>,
}

impl Loaded {
    /// The bytes of `blob`.
    pub fn bytes(&self, blob: Blob) -> Result<&[u8], LoadError> {
        let end = blob.at.checked_add(blob.len).filter(|e| *e <= self.payload.len() as u64);
        match end {
            Some(end) => Ok(&self.payload[blob.at as usize..end as usize]),
            None => Err(LoadError::Format(format!(
                "a blob at {} of {} bytes lies outside the {}-byte payload",
                blob.at,
                blob.len,
                self.payload.len()
            ))),
        }
    }

    /// Checks every blob: a state that loads has no dangling reference.
    fn check(&self) -> Result<(), LoadError> {
        for s in &self.header.sessions {
            self.bytes(s.ring)?;
            if let Some(screen) = s.screen {
                self.bytes(screen)?;
            }
            if s.master_fd.is_some() == s.exit.is_some() {
                return Err(LoadError::Format(format!(
                    "session {} must have a terminal exactly while it runs",
                    s.id
                )));
            }
        }
        Ok(())
    }
}

/// Reads a state from the start of `file`.
pub fn read(file: &mut File) -> Result<Loaded, LoadError> {
    file.rewind()?;
    let mut head = [0u8; 12];
    file.read_exact(&mut head).map_err(|e| LoadError::Format(format!("too short: {e}")))?;
    if &head[..8] != MAGIC {
        return Err(LoadError::Format("wrong magic".into()));
    }
    let len = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    if len > MAX_HEADER {
        return Err(LoadError::Format(format!("a header of {len} bytes")));
    }
    let mut json = vec![0u8; len as usize];
    file.read_exact(&mut json).map_err(|e| LoadError::Format(format!("header: {e}")))?;
    // The version first, so that a newer layout is refused by its number, not by a
    // parse error.
    #[derive(Deserialize)]
    struct Version {
        version: u32,
        #[serde(default)]
        from_version: String,
    }
    let v: Version =
        serde_json::from_slice(&json).map_err(|e| LoadError::Format(format!("header: {e}")))?;
    if !LOADS.contains(&v.version) {
        return Err(LoadError::Version {
            found: v.version,
            writer: v.from_version,
            ours: env!("CARGO_PKG_VERSION"),
        });
    }
    let header: Handover =
        serde_json::from_slice(&json).map_err(|e| LoadError::Format(format!("header: {e}")))?;
    let mut payload = Vec::new();
    file.read_to_end(&mut payload)?;
    let loaded = Loaded { header, payload };
    loaded.check()?;
    Ok(loaded)
}

/// Takes the descriptor named by [`HANDOVER_ENV`], if the variable is set, and removes the
/// variable so that no session inherits it.
///
/// # Safety
/// Call at the start of `main`, before anything else owns descriptors: the number is
/// taken over as an owned descriptor.
#[allow(unsafe_code)]
pub unsafe fn take_from_env() -> Option<Result<File, LoadError>> {
    let value = std::env::var(HANDOVER_ENV).ok()?;
    // SAFETY: single-threaded at the start of main (the caller's contract).
    unsafe { std::env::remove_var(HANDOVER_ENV) };
    let fd: RawFd = match value.parse() {
        Ok(fd) if fd > 2 => fd,
        _ => return Some(Err(LoadError::Format(format!("{HANDOVER_ENV}={value:?}")))),
    };
    if fcntl(fd, FcntlArg::F_GETFD).is_err() {
        return Some(Err(LoadError::Format(format!("{HANDOVER_ENV}={fd} is not open"))));
    }
    // SAFETY: the descriptor is open and, per the caller's contract, owned by no one else.
    Some(Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(sessions: Vec<SessionRecord>) -> Handover {
        Handover {
            version: HANDOVER_VERSION,
            from_version: "test".into(),
            from_binary: "/bin/ptyd".into(),
            to_binary: "/bin/ptyd".into(),
            started_at_ms: 1,
            upgrades: 1,
            requested_at_ms: 2,
            listener_fd: 3,
            socket_path: None,
            reply: None,
            fallback_fd: None,
            failed: None,
            sessions,
        }
    }

    fn record(ring: Blob, master_fd: Option<RawFd>) -> SessionRecord {
        SessionRecord {
            id: SessionId::new(),
            pid: 42,
            command: "bash".into(),
            args: vec![],
            cwd: None,
            labels: BTreeMap::new(),
            idle_timeout_ms: 0,
            integration: Integration::None,
            replay_bytes: 4096,
            scrollback_lines: Some(10),
            cols: 80,
            rows: 24,
            created_at_ms: 1,
            activity_ms: 1,
            output_ms: 1,
            input_mark: 0,
            ring_start: 0,
            ring,
            screen: None,
            shell: ShellState::AtPrompt,
            paste: true,
            uid: 1000,
            gid: 1000,
            class: Class::Agent,
            cgroup: None,
            owned: false,
            master_fd,
            exit: None,
            end: None,
            leased: false,
            upgrades: 0,
        }
    }

    #[test]
    fn a_state_round_trips_sealed() {
        let state = header(vec![record(Blob { at: 0, len: 5 }, Some(7))]);
        let Written { mut file, len } = write(&state, b"hello").unwrap();
        assert_eq!(len, 12 + serde_json::to_vec(&state).unwrap().len() as u64 + 5);
        // Sealed: nobody can change it after it is written.
        assert!(file.write_all(b"x").is_err());
        let loaded = read(&mut file).unwrap();
        assert_eq!(loaded.bytes(loaded.header.sessions[0].ring).unwrap(), b"hello");
        assert_eq!(loaded.header.descriptors(), vec![3, 7]);
    }

    #[test]
    fn bad_states_are_refused_with_the_reason() {
        let too_new = Handover { version: 99, ..header(vec![]) };
        let Written { mut file, .. } = write(&too_new, b"").unwrap();
        let err = read(&mut file).err().unwrap().to_string();
        assert!(err.contains("version 99") && err.contains("loads versions 1..=1"), "{err}");

        let dangling = header(vec![record(Blob { at: 2, len: 10 }, Some(7))]);
        let Written { mut file, .. } = write(&dangling, b"short").unwrap();
        let err = read(&mut file).err().unwrap().to_string();
        assert!(err.contains("outside the 5-byte payload"), "{err}");

        let mut f = File::from(memfd_create(c"not-a-state", MemFdCreateFlag::MFD_CLOEXEC).unwrap());
        f.write_all(b"#!/bin/sh\nexit 0\n").unwrap();
        assert!(read(&mut f).err().unwrap().to_string().contains("wrong magic"));
    }
}
