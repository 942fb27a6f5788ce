//! The listening socket: private directory, stale-file handling, never stealing a live
//! daemon's socket, mode 0600, and removal only of the file this process created.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{umask, Mode};
use tracing::info;

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Another daemon answers on this path.
    #[error("another ptyd is already serving {0}; not taking over its socket")]
    InUse(PathBuf),
    /// The path exists and is something else.
    #[error("{0} exists and is not a socket")]
    NotASocket(PathBuf),
    /// Any other failure, with what was being done.
    #[error("{what} {path}: {source}")]
    Io {
        /// The step.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// The socket file this process created; `remove` deletes it only if it is still that file.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    identity: (u64, u64),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SocketError + 'a {
    move |source| SocketError::Io { what, path: path.to_path_buf(), source }
}

/// Binds `path`, creating missing parent directories with mode 0700. The listener is
/// non-blocking, ready for `tokio::net::UnixListener::from_std`.
pub fn bind(path: &Path) -> Result<(std::os::unix::net::UnixListener, SocketFile), SocketError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err("creating", dir))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(SocketError::InUse(path.to_path_buf())),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    info!(path = %path.display(), "removing stale socket left by a daemon that is gone");
                    std::fs::remove_file(path).map_err(io_err("removing stale socket", path))?;
                }
                Err(e) => return Err(io_err("probing", path)(e)),
            }
        }
        Ok(_) => return Err(SocketError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("inspecting", path)(e)),
    }
    // Create the socket file as 0600 from the start rather than chmod it afterwards.
    let old = umask(Mode::from_bits_truncate(0o177));
    let bound = std::os::unix::net::UnixListener::bind(path);
    umask(old);
    let listener = bound.map_err(io_err("binding", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("chmod", path))?;
    let meta = std::fs::symlink_metadata(path).map_err(io_err("inspecting", path))?;
    listener.set_nonblocking(true).map_err(io_err("configuring", path))?;
    Ok((listener, SocketFile { path: path.to_path_buf(), identity: (meta.dev(), meta.ino()) }))
}

impl SocketFile {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The socket file an earlier image of this process created at `path` (a live upgrade
    /// carried its listener over).
    pub fn adopt(path: &Path) -> io::Result<SocketFile> {
        let meta = std::fs::symlink_metadata(path)?;
        if !meta.file_type().is_socket() {
            return Err(io::Error::other("not a socket any more"));
        }
        Ok(SocketFile { path: path.to_path_buf(), identity: (meta.dev(), meta.ino()) })
    }

    /// Removes the socket file if it is still the one this process created.
    pub fn remove(&self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.identity {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}
