//! Shell integration: the interactive bash and zsh that ptyd starts print semantic
//! prompt marks (OSC 133 `A`, `C`, `D;<status>`; see `session/marks.rs`), so that `run`
//! knows when a command typed into a live shell has finished and with what status. The
//! user's own startup files are read as the shell would read them; the hooks go after
//! them and keep what they set up (an existing `PROMPT_COMMAND`, `PS0`, precmd hooks).
//!
//! - bash, with startup files: `--rcfile <dir>/bashrc`, which sources `~/.bashrc` first
//!   (bash itself still reads `/etc/bash.bashrc`, as it does without `--rcfile`).
//! - bash with `--norc`, or a login bash (which reads no rc file): `PROMPT_COMMAND` and
//!   `PS0` in its environment, taken back out of the environment at the first prompt so
//!   that shells started inside do not inherit them.
//! - zsh: `ZDOTDIR=<dir>/zsh`, whose `.zshenv` puts the user's `ZDOTDIR` back, sources
//!   their `.zshenv` and adds precmd and preexec hooks; zsh then reads the user's other
//!   files from their own directory. `zsh -f` reads none of these and gets no marks.
//!
//! Anything else (`bash -c …`, a script, another shell) runs exactly as asked.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::pty::SpawnSpec;

const BASHRC: &str = r#"# ptyd's shell integration for bash (ptyd started this shell with --rcfile):
# ~/.bashrc first, as bash would have read it, then semantic prompt marks (OSC 133).
if [ -r ~/.bashrc ]; then . ~/.bashrc; fi
__ptyd_prompt() {
  local status=$?
  printf '\033]133;D;%s\007\033]133;A\007' "$status"
  return "$status"
}
if [[ "$(declare -p PROMPT_COMMAND 2>/dev/null)" == "declare -a"* ]]; then
  PROMPT_COMMAND=(__ptyd_prompt "${PROMPT_COMMAND[@]}")
else
  PROMPT_COMMAND="__ptyd_prompt${PROMPT_COMMAND:+;$PROMPT_COMMAND}"
fi
PS0="${PS0-}"$'\e]133;C\a\r'
"#;

/// The `C` mark, printed where the command's output starts (the cursor is at the start
/// of a line there), and a CR: output still starts a line for whoever matches
/// `^…` on the raw bytes with CR as a line end.
const OUTPUT_START: &str = "\x1b]133;C\x07\r";

/// `PROMPT_COMMAND` for a bash that reads no rc file: the status first, then the marks.
const BASH_PROMPT_COMMAND: &str = r#"__ptyd_status=$?; export -n PROMPT_COMMAND PS0; printf '\033]133;D;%s\007\033]133;A\007' "$__ptyd_status"; unset __ptyd_status"#;

const ZSHENV: &str = r#"# ptyd's shell integration for zsh (ptyd pointed ZDOTDIR here): the user's ZDOTDIR
# back, their .zshenv, then semantic prompt marks (OSC 133); zsh reads their other
# startup files from their own directory.
if [[ -n ${PTYD_ZDOTDIR+x} ]]; then ZDOTDIR=$PTYD_ZDOTDIR; else unset ZDOTDIR; fi
unset PTYD_ZDOTDIR
[[ -r ${ZDOTDIR:-$HOME}/.zshenv ]] && builtin source "${ZDOTDIR:-$HOME}/.zshenv"
if [[ -o interactive ]]; then
  __ptyd_precmd() { local s=$?; builtin print -n "\e]133;D;$s\a\e]133;A\a"; return $s }
  __ptyd_preexec() { builtin print -n "\e]133;C\a\r" }
  autoload -Uz add-zsh-hook
  add-zsh-hook precmd __ptyd_precmd
  add-zsh-hook preexec __ptyd_preexec
fi
"#;

/// Where the integration's files are (written by [`install`]).
#[derive(Debug, Clone)]
pub struct ShellFiles {
    dir: PathBuf,
}

/// Writes the integration's files into `dir` (created, owner-only), replacing what an
/// earlier daemon left there. Refuses a `dir` that is a symlink or another user's: the
/// files are code every session's shell runs.
pub fn install(dir: &Path) -> io::Result<ShellFiles> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let meta = fs::symlink_metadata(dir)?;
    if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is not a directory of ptyd's user", dir.display()),
        ));
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    fs::create_dir_all(dir.join("zsh"))?;
    fs::write(dir.join("bashrc"), BASHRC)?;
    fs::write(dir.join("zsh").join(".zshenv"), ZSHENV)?;
    Ok(ShellFiles { dir: dir.to_path_buf() })
}

impl ShellFiles {
    /// Removes the files [`install`] wrote and their directory (a daemon that stops takes
    /// them with it, as it does its socket). Only those: anything else found there stays.
    pub fn remove(&self) {
        let _ = fs::remove_file(self.dir.join("bashrc"));
        let _ = fs::remove_file(self.dir.join("zsh").join(".zshenv"));
        let _ = fs::remove_dir(self.dir.join("zsh"));
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Which integration a spawn got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Integration {
    /// bash reading `<dir>/bashrc`.
    BashRcfile,
    /// bash with the hooks in its environment.
    BashEnv,
    /// zsh through `ZDOTDIR`.
    Zsh,
    /// Not an interactive bash or zsh: started as asked.
    None,
}

/// Adds the integration to `spec` when it starts an interactive bash or zsh.
/// `daemon_env` looks up the daemon's own environment (which the session inherits).
pub fn apply(
    spec: &mut SpawnSpec,
    files: &ShellFiles,
    daemon_env: impl Fn(&str) -> Option<String>,
) -> Integration {
    let name = Path::new(&spec.command).file_name().and_then(|n| n.to_str()).unwrap_or("");
    let has = |flag: &str| spec.args.iter().any(|a| a == flag);
    match name {
        "bash" if interactive(&spec.args, &["-i", "-l", "--login", "--norc", "--noprofile"]) => {
            if has("--norc") || has("-l") || has("--login") {
                spec.env.push(("PROMPT_COMMAND".into(), BASH_PROMPT_COMMAND.into()));
                spec.env.push(("PS0".into(), OUTPUT_START.into()));
                Integration::BashEnv
            } else {
                // Long options come before the short ones.
                let rcfile = files.dir.join("bashrc").to_string_lossy().into_owned();
                spec.args.splice(0..0, ["--rcfile".to_string(), rcfile]);
                Integration::BashRcfile
            }
        }
        "zsh" if interactive(&spec.args, &["-i", "-l", "--login"]) => {
            let own = spec
                .env
                .iter()
                .rev()
                .find(|(k, _)| k == "ZDOTDIR")
                .map(|(_, v)| v.clone())
                .or_else(|| daemon_env("ZDOTDIR"));
            if let Some(own) = own {
                spec.env.push(("PTYD_ZDOTDIR".into(), own));
            }
            let zdotdir = files.dir.join("zsh").to_string_lossy().into_owned();
            spec.env.push(("ZDOTDIR".into(), zdotdir));
            Integration::Zsh
        }
        _ => Integration::None,
    }
}

/// Whether `args` start an interactive shell: only flags from `allowed`, no command or
/// script.
fn interactive(args: &[String], allowed: &[&str]) -> bool {
    args.iter().all(|a| allowed.contains(&a.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(command: &str, args: &[&str]) -> SpawnSpec {
        SpawnSpec {
            command: command.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            cwd: None,
            cols: 80,
            rows: 24,
        }
    }

    #[test]
    fn only_interactive_bash_and_zsh_are_integrated() {
        let files = ShellFiles { dir: PathBuf::from("/run/ptyd/ptyd.sock.shell") };
        let none = |_: &str| None;
        let mut s = spec("bash", &[]);
        assert_eq!(apply(&mut s, &files, none), Integration::BashRcfile);
        assert_eq!(s.args, ["--rcfile", "/run/ptyd/ptyd.sock.shell/bashrc"]);
        let mut s = spec("/bin/bash", &["--norc", "--noprofile", "-i"]);
        assert_eq!(apply(&mut s, &files, none), Integration::BashEnv);
        assert_eq!(s.args, ["--norc", "--noprofile", "-i"]);
        assert!(s.env.iter().any(|(k, _)| k == "PROMPT_COMMAND"));
        let mut s = spec("zsh", &["-l"]);
        assert_eq!(apply(&mut s, &files, |_| Some("/home/u/.config/zsh".into())), Integration::Zsh);
        assert!(s.env.contains(&("PTYD_ZDOTDIR".into(), "/home/u/.config/zsh".into())));
        assert!(s.env.contains(&("ZDOTDIR".into(), "/run/ptyd/ptyd.sock.shell/zsh".into())));
        for (command, args) in
            [("bash", &["-c", "true"][..]), ("bash", &["script.sh"]), ("zsh", &["-f"]), ("sh", &[])]
        {
            let mut s = spec(command, args);
            assert_eq!(apply(&mut s, &files, none), Integration::None, "{command} {args:?}");
            assert_eq!(s.args, args, "{command} {args:?}");
            assert!(s.env.is_empty());
        }
    }

    #[test]
    fn install_writes_owner_only_files_and_refuses_a_symlink() {
        let base = std::env::temp_dir().join(format!("ptyd-shell-test-{}", std::process::id()));
        fs::create_dir_all(&base).unwrap();
        let dir = base.join("ptyd.sock.shell");
        install(&dir).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(fs::read_to_string(dir.join("bashrc")).unwrap().contains("133;D"));
        assert!(dir.join("zsh/.zshenv").exists());
        // Again over what an earlier daemon left: fine.
        install(&dir).unwrap();
        // A symlink in its place (someone else's directory, say): refused.
        let link = base.join("other.sock.shell");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(install(&link).is_err());
        fs::remove_dir_all(&base).unwrap();
    }
}
