//! The bridge's credential: a secret that never reaches a log line, generated from the
//! OS's CSPRNG when none is configured and kept in a 0600 file in the runtime directory,
//! so that a restarted bridge keeps its users logged in.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// Random bytes in a generated token or ticket.
const RANDOM_BYTES: usize = 32;

/// A secret string. `Debug` and `Display` never show it, so a config dump or an error
/// message cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// A fresh random secret: 32 bytes from the OS, hex-encoded.
    pub fn random() -> Secret {
        Secret(random_hex())
    }

    /// The secret itself, for comparing and for the one place that prints it on purpose.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this secret, in time that does not depend on where they differ.
    pub fn matches(&self, given: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(given.as_bytes()))
    }

    /// Whether it is empty (an empty token would accept an empty header).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// 32 random bytes from the OS, hex-encoded.
pub fn random_hex() -> String {
    let mut bytes = [0u8; RANDOM_BYTES];
    // The OS's random source failing is not something the bridge can work around, and
    // going on with a predictable secret would be worse than stopping.
    getrandom::fill(&mut bytes).expect("the OS random number generator is unavailable");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the generated token lives: `$XDG_RUNTIME_DIR/ptyd-bridge/token`, else
/// `/tmp/ptyd-bridge-$UID/token`.
pub fn default_token_path() -> PathBuf {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(runtime) => PathBuf::from(runtime).join("ptyd-bridge"),
        None => std::env::temp_dir().join(format!("ptyd-bridge-{}", nix::unistd::getuid())),
    };
    dir.join("token")
}

/// Why a token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file or its directory could be read or replaced by another user.
    #[error(
        "{path} is {what} (owner uid {owner}, mode {mode:o}); it must belong to uid {uid} \
         and be private to it (chmod {want:o})"
    )]
    Unsafe {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong, in words.
        what: &'static str,
        /// Its owner.
        owner: u32,
        /// Its permission bits.
        mode: u32,
        /// Our uid.
        uid: u32,
        /// The mode it should have.
        want: u32,
    },
    /// The file holds nothing.
    #[error("{0} is empty")]
    Empty(PathBuf),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TokenFileError + '_ {
    move |source| TokenFileError::Io { path: path.to_path_buf(), source }
}

/// Whether [`load_or_create`] made a new token or found the one it made before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A new token was written.
    Created,
    /// The file was already there.
    Reused,
}

/// Reads a configured token file (`--token-file`, a systemd credential): surrounding
/// whitespace is ignored; an empty file is an error.
pub fn read(path: &Path) -> Result<Secret, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenFileError::Empty(path.to_path_buf()));
    }
    Ok(Secret::new(token))
}

/// The generated token at `path`: read when the file exists (it and its directory must be
/// ours and private), else created with a new random token, mode 0600, in a 0700
/// directory.
pub fn load_or_create(path: &Path) -> Result<(Secret, Origin), TokenFileError> {
    let uid = nix::unistd::getuid().as_raw();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_error(dir))?;
        check_private(dir, uid, 0o700, "a directory others can write to or list")?;
    }
    match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(mut file) => {
            let token = Secret::random();
            file.write_all(format!("{}\n", token.expose()).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io_error(path))?;
            Ok((token, Origin::Created))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            check_private(path, uid, 0o600, "readable by other users")?;
            Ok((read(path)?, Origin::Reused))
        }
        Err(e) => Err(io_error(path)(e)),
    }
}

/// Refuses `path` unless `uid` owns it and no group or other permission bit is set.
fn check_private(
    path: &Path,
    uid: u32,
    want: u32,
    what: &'static str,
) -> Result<(), TokenFileError> {
    let meta = std::fs::symlink_metadata(path).map_err(io_error(path))?;
    let mode = meta.permissions().mode() & 0o7777;
    if meta.uid() != uid || mode & 0o077 != 0 || meta.file_type().is_symlink() {
        return Err(TokenFileError::Unsafe {
            path: path.to_path_buf(),
            what,
            owner: meta.uid(),
            mode,
            uid,
            want,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_output() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(redacted)");
        assert!(s.matches("hunter2"));
        assert!(!s.matches("hunter3"));
        assert!(!s.matches("hunter22"));
    }

    #[test]
    fn random_secrets_are_long_and_distinct() {
        let (a, b) = (Secret::random(), Secret::random());
        assert_eq!(a.expose().len(), 64);
        assert_ne!(a, b);
    }

    #[test]
    fn the_generated_token_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("token");
        let (first, origin) = load_or_create(&path).unwrap();
        assert_eq!(origin, Origin::Created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let (again, origin) = load_or_create(&path).unwrap();
        assert_eq!((again, origin), (first, Origin::Reused));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create(&path).unwrap_err();
        assert!(err.to_string().contains("readable by other users"), "{err}");
    }

    #[test]
    fn a_configured_file_is_trimmed_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "  s3cret\n").unwrap();
        assert!(read(&path).unwrap().matches("s3cret"));
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(read(&path), Err(TokenFileError::Empty(_))));
    }
}
