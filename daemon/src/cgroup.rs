//! Containment with cgroup v2: every session runs in a cgroup of its own, so ending it
//! ends everything it started, whatever process group or session those processes moved
//! to.
//!
//! Layout, under ptyd's own cgroup `<base>` (from `/proc/self/cgroup`, in the `cgroup2`
//! mount found in `/proc/self/mountinfo`):
//!
//! ```text
//! <base>/daemon/              ptyd itself, only when it had to enable controllers in <base>
//! <base>/ptyd-<pid>/          this daemon's subtree, removed at shutdown
//! <base>/ptyd-<pid>/session-<id>/   one session: pids.max, memory.max, cgroup.kill
//! ```
//!
//! Many daemons may share `<base>` (the tests run dozens at once), so each keeps to the
//! subtree named after its pid, and one that starts removes the subtrees of ptyds that
//! are gone. A session's child joins its cgroup itself between fork and exec (see
//! `pty.rs`), so not even its first fork can escape.

mod watch;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use watch::{wait_empty_blocking, Watcher};

/// How long to wait for a killed cgroup to empty before giving up on it: a process in
/// uninterruptible sleep cannot be helped by waiting longer.
pub const EMPTY_LIMIT: Duration = Duration::from_secs(10);

/// Per-session limits, written into each session's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// `pids.max`: processes and threads the session may have at once.
    pub pids_max: Option<u64>,
    /// `memory.max`, in bytes.
    pub memory_max: Option<u64>,
}

impl Limits {
    /// `(flag, controller)` for every limit asked for.
    fn wanted(&self) -> Vec<(&'static str, &'static str)> {
        let mut wanted = Vec::new();
        if self.pids_max.is_some() {
            wanted.push(("--session-pids-max", "pids"));
        }
        if self.memory_max.is_some() {
            wanted.push(("--session-memory-max", "memory"));
        }
        wanted
    }
}

/// Why ptyd refuses to start: a limit was asked for that the system cannot enforce.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The controller a limit needs is not there (or cgroups cannot be used at all).
    #[error("{flag} needs the {controller} controller of the cgroup v2 hierarchy ({hierarchy}), but {why}")]
    ControllerMissing {
        /// The flag that asked for the limit.
        flag: &'static str,
        /// `pids` or `memory`.
        controller: &'static str,
        /// The cgroup2 mount point, or why there is none.
        hierarchy: String,
        /// What is missing.
        why: String,
    },
}

/// What becomes of a `ptyd-<pid>` subtree that exists already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Left by an earlier process with this pid: killed and made anew.
    Replace,
    /// This very process's, from before a live upgrade: its sessions run in it; kept.
    Keep,
}

/// The outcome of [`CgroupTree::setup`].
#[derive(Debug)]
pub enum Setup {
    /// Sessions get cgroups of their own.
    Contained(Arc<CgroupTree>),
    /// No usable cgroup v2; the reason, for the one warning.
    Unavailable(String),
}

/// Logs, once, that sessions are contained by process groups only.
pub fn log_fallback(reason: &str) {
    warn!(
        reason,
        "no cgroup containment; falling back to process groups: a process that leaves its \
         session's process group can outlive the session"
    );
}

/// Where cgroup v2 is mounted and where ptyd sits in it.
#[derive(Debug)]
struct Hierarchy {
    mount: PathBuf,
    /// ptyd's cgroup, as an absolute directory.
    own: PathBuf,
    /// ptyd's cgroup as `/proc/self/cgroup` names it, e.g. `/` or `/system.slice/ptyd.service`.
    name: String,
    /// Whether ptyd's cgroup is the hierarchy's root (exempt from no-internal-processes).
    is_root: bool,
}

/// This daemon's subtree of session cgroups.
pub struct CgroupTree {
    dir: PathBuf,
    limits: Limits,
    /// Created at setup, so a daemon that got this far can always watch its sessions.
    watcher: Watcher,
}

impl std::fmt::Debug for CgroupTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CgroupTree").field("dir", &self.dir).field("limits", &self.limits).finish()
    }
}

impl CgroupTree {
    /// Finds the cgroup v2 hierarchy and ptyd's cgroup, removes the subtrees of ptyds
    /// that are gone, and creates this daemon's subtree with the controllers `limits`
    /// need. Blocking; call before the runtime starts (ptyd may move itself into a leaf).
    pub fn setup(limits: Limits, existing: Existing) -> Result<Setup, CgroupError> {
        let wanted = limits.wanted();
        let refuse = |(flag, controller): (&'static str, &'static str), hierarchy: &str, why| {
            CgroupError::ControllerMissing { flag, controller, hierarchy: hierarchy.into(), why }
        };
        let hier = match (find_hierarchy(), wanted.first()) {
            (Ok(hier), _) => hier,
            (Err(why), None) => return Ok(Setup::Unavailable(why)),
            (Err(why), Some(&first)) => return Err(refuse(first, "none found", why)),
        };
        let mount = hier.mount.display().to_string();
        let controllers_file = hier.own.join("cgroup.controllers");
        let available = read_words(&controllers_file);
        if let Some(&missing) = wanted.iter().find(|(_, c)| !available.iter().any(|a| a == c)) {
            let why = format!(
                "ptyd's cgroup {} offers only [{}] in {}",
                hier.name,
                available.join(" "),
                controllers_file.display()
            );
            return Err(refuse(missing, &mount, why));
        }
        match (Self::build(&hier, limits, existing), wanted.first()) {
            (Ok(tree), _) => Ok(Setup::Contained(tree)),
            (Err(why), None) => Ok(Setup::Unavailable(why)),
            (Err(why), Some(&first)) => Err(refuse(first, &mount, why)),
        }
    }

    /// Clears stale subtrees, enables the controllers `limits` need and makes the subtree.
    fn build(
        hier: &Hierarchy,
        limits: Limits,
        existing: Existing,
    ) -> Result<Arc<CgroupTree>, String> {
        remove_stale_subtrees(&hier.own);
        let controllers: Vec<&str> = limits.wanted().into_iter().map(|(_, c)| c).collect();
        enable_controllers(hier, &controllers)?;
        let dir = hier.own.join(format!("ptyd-{}", std::process::id()));
        if existing == Existing::Keep && dir.is_dir() {
            info!(cgroup = %dir.display(), "kept the cgroup subtree the sessions run in");
        } else {
            make_subtree(&dir, &controllers)?;
        }
        let watcher = Watcher::new().map_err(|e| {
            let _ = remove_dir_tree(&dir);
            format!("cannot create an inotify instance to watch cgroups: {e}")
        })?;
        info!(
            cgroup = %dir.display(),
            pids_max = ?limits.pids_max,
            memory_max = ?limits.memory_max,
            "sessions run in cgroups of their own"
        );
        Ok(Arc::new(CgroupTree { dir, limits, watcher }))
    }

    /// This daemon's subtree.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Creates the cgroup `name` for a new session, with the limits set, and opens its
    /// directory, which the child is created in or joins through (see `child::ChildFds`).
    pub fn create_session(self: &Arc<Self>, name: &str) -> io::Result<(SessionCgroup, File)> {
        let dir = self.dir.join(name);
        fs::create_dir(&dir).map_err(|e| context(e, "creating", &dir))?;
        // From here on a failure removes the directory again.
        let cgroup = SessionCgroup { dir, tree: self.clone() };
        if let Some(n) = self.limits.pids_max {
            cgroup.write("pids.max", &n.to_string())?;
        }
        if let Some(n) = self.limits.memory_max {
            cgroup.write("memory.max", &n.to_string())?;
        }
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_CLOEXEC | nix::libc::O_DIRECTORY)
            .open(&cgroup.dir)
            .map_err(|e| context(e, "opening", &cgroup.dir))?;
        Ok((cgroup, file))
    }

    /// The cgroup of a session that crossed a live upgrade, if its directory is in this
    /// subtree and still exists.
    pub fn adopt_session(self: &Arc<Self>, dir: &Path) -> Option<SessionCgroup> {
        (dir.parent() == Some(self.dir.as_path()) && dir.is_dir())
            .then(|| SessionCgroup { dir: dir.to_path_buf(), tree: self.clone() })
    }

    /// Kills whatever is left in the subtree, waits (bounded) for it to empty and removes
    /// it. Blocking; for the end of `main`, once every session has ended.
    pub fn remove(&self) {
        match kill_and_remove(&self.dir) {
            Ok(()) => info!(cgroup = %self.dir.display(), "removed ptyd's cgroup subtree"),
            Err(e) => {
                warn!(cgroup = %self.dir.display(), error = %e, "cannot remove ptyd's cgroup subtree")
            }
        }
    }
}

/// One session's cgroup. Dropping it removes the directory if the cgroup is empty; the
/// lifecycle waits for that before it frees the session's slot.
#[derive(Debug)]
pub struct SessionCgroup {
    dir: PathBuf,
    tree: Arc<CgroupTree>,
}

impl SessionCgroup {
    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn write(&self, file: &str, value: &str) -> io::Result<()> {
        let path = self.dir.join(file);
        fs::write(&path, value).map_err(|e| context(e, "writing", &path))
    }

    /// SIGKILLs every process in the cgroup at once (`cgroup.kill`).
    pub fn kill(&self) -> io::Result<()> {
        self.write("cgroup.kill", "1")
    }

    /// Sends `signal` to every process in the cgroup, one by one (there is no
    /// `cgroup.kill` for other signals). Processes that exit meanwhile are skipped.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        for pid in read_words(&self.dir.join("cgroup.procs")) {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
            }
        }
    }

    /// True while any process is in the cgroup.
    pub fn populated(&self) -> bool {
        populated(&self.dir)
    }

    /// Whether the kernel OOM-killed a process here (`oom_kill` in `memory.events`);
    /// false without the memory controller.
    pub fn oom_killed(&self) -> bool {
        fs::read_to_string(self.dir.join("memory.events")).is_ok_and(|text| oom_kills(&text) > 0)
    }

    /// Waits until the cgroup is empty, for at most `limit`; returns whether it is. Driven
    /// by inotify events on `cgroup.events`, which the kernel raises when `populated`
    /// changes.
    pub async fn wait_empty(&self, limit: Duration) -> io::Result<bool> {
        self.tree.watcher.wait_empty(&self.dir, limit).await
    }

    /// Removes the (empty) cgroup directory.
    pub fn remove(&self) -> io::Result<()> {
        match remove_dir_tree(&self.dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other.map_err(|e| context(e, "removing", &self.dir)),
        }
    }
}

impl Drop for SessionCgroup {
    fn drop(&mut self) {
        // Normally already removed; after an early return the processes were just
        // SIGKILLed, so the directory is left for the daemon's shutdown to remove.
        let _ = remove_dir_tree(&self.dir);
    }
}

/// The `oom_kill` count of a `memory.events` text.
fn oom_kills(events: &str) -> u64 {
    events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// The first `cgroup2` mount of `/proc/self/mountinfo` and ptyd's `0::` cgroup in it.
fn find_hierarchy() -> Result<Hierarchy, String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let (root, mount) = mountinfo
        .lines()
        .find_map(parse_cgroup2_mount)
        .ok_or("no cgroup2 filesystem is mounted (no cgroup2 line in /proc/self/mountinfo)")?;
    let cgroups = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let own = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("/proc/self/cgroup has no cgroup v2 (0::) line")?;
    // A mount of a subtree (a cgroup namespace, a bind mount) shows paths relative to it.
    let relative = own
        .strip_prefix(root.as_str())
        .ok_or_else(|| format!("ptyd's cgroup {own} is outside the cgroup2 mount's root {root}"))?;
    let own_dir = match relative.trim_start_matches('/') {
        "" => mount.clone(),
        relative => mount.join(relative),
    };
    Ok(Hierarchy { own: own_dir, name: own.to_string(), is_root: own == "/", mount })
}

/// `(root, mount point)` of a mountinfo line whose filesystem type is `cgroup2`.
fn parse_cgroup2_mount(line: &str) -> Option<(String, PathBuf)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let sep = fields.iter().position(|f| *f == "-")?;
    if fields.get(sep + 1) != Some(&"cgroup2") {
        return None;
    }
    Some((unescape(fields.get(3)?), PathBuf::from(unescape(fields.get(4)?))))
}

/// Undoes mountinfo's octal escapes (`\040` is a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok().and_then(|d| u8::from_str_radix(d, 8).ok()));
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The whitespace-separated words of a cgroup file; none if it cannot be read.
fn read_words(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .map(|t| t.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// `populated 1` in `cgroup.events`; a cgroup that is gone is empty.
fn populated(dir: &Path) -> bool {
    fs::read_to_string(dir.join("cgroup.events"))
        .map(|t| t.lines().any(|l| l == "populated 1"))
        .unwrap_or(false)
}

/// Makes `controllers` available to children of ptyd's cgroup. A non-root cgroup with
/// processes in it cannot enable controllers for its children (no internal processes),
/// so ptyd first moves itself into the leaf `daemon/`.
fn enable_controllers(hier: &Hierarchy, controllers: &[&str]) -> Result<(), String> {
    let control = hier.own.join("cgroup.subtree_control");
    let enabled = read_words(&control);
    let missing: Vec<&&str> =
        controllers.iter().filter(|c| !enabled.iter().any(|e| e == *c)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let leaf = hier.own.join("daemon");
    if !hier.is_root {
        let moved = fs::create_dir_all(&leaf)
            .and_then(|()| fs::write(leaf.join("cgroup.procs"), std::process::id().to_string()));
        if let Err(e) = moved {
            return Err(format!("ptyd cannot move itself into {}: {e}", leaf.display()));
        }
        info!(cgroup = %leaf.display(), "moved ptyd into a leaf cgroup to enable controllers for its sessions");
    }
    let words: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
    if let Err(e) = fs::write(&control, words.join(" ")) {
        if !hier.is_root {
            // Back where it was, so that the refusal leaves nothing behind.
            let _ = fs::write(hier.own.join("cgroup.procs"), std::process::id().to_string());
            let _ = fs::remove_dir(&leaf);
        }
        let hint = match e.raw_os_error() {
            Some(nix::libc::EBUSY) => " (other processes share ptyd's cgroup; give ptyd a cgroup of its own, e.g. a systemd unit with Delegate=yes)",
            _ => "",
        };
        return Err(format!(
            "writing {} to {} failed: {e}{hint}",
            words.join(" "),
            control.display()
        ));
    }
    Ok(())
}

/// Creates this daemon's subtree and enables `controllers` for its sessions.
fn make_subtree(dir: &Path, controllers: &[&str]) -> Result<(), String> {
    if dir.exists() {
        // A ptyd that had this pid before (a restarted container) left it behind.
        kill_and_remove(dir).map_err(|e| format!("cannot remove stale {}: {e}", dir.display()))?;
    }
    fs::create_dir(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let fail = |why: String| {
        let _ = fs::remove_dir(dir);
        Err(why)
    };
    if !dir.join("cgroup.kill").exists() {
        return fail("the kernel has no cgroup.kill (Linux 5.14 or later is needed)".into());
    }
    if !controllers.is_empty() {
        let words: Vec<String> = controllers.iter().map(|c| format!("+{c}")).collect();
        let control = dir.join("cgroup.subtree_control");
        if let Err(e) = fs::write(&control, words.join(" ")) {
            return fail(format!(
                "writing {} to {} failed: {e}",
                words.join(" "),
                control.display()
            ));
        }
    }
    Ok(())
}

/// Removes the `ptyd-<pid>` subtrees under `base` whose ptyd is no longer running.
fn remove_stale_subtrees(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("ptyd-")?.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || ptyd_running(pid) {
            continue;
        }
        let dir = entry.path();
        match kill_and_remove(&dir) {
            Ok(()) => {
                info!(pid, cgroup = %dir.display(), "removed the cgroup subtree of a ptyd that is gone")
            }
            // Another starting ptyd may be removing it at the same moment.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(pid, cgroup = %dir.display(), error = %e, "cannot remove the cgroup subtree of a ptyd that is gone")
            }
        }
    }
}

/// Whether `pid` is a live (not zombie) process named ptyd.
fn ptyd_running(pid: u32) -> bool {
    let Some((name, state)) = name_and_state(&format!("/proc/{pid}/stat")) else { return false };
    if name != "ptyd" {
        return false;
    }
    if state != "Z" {
        return true;
    }
    // A live upgrade execs from a worker thread: for a moment the leader shows as a zombie
    // while that thread takes its place. The process runs while any of its threads does.
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().any(|task| {
        let stat = task.path().join("stat");
        name_and_state(&stat.to_string_lossy()).is_some_and(|(_, state)| state != "Z")
    })
}

/// The command name and state letter of a `/proc/.../stat` file.
fn name_and_state(path: &str) -> Option<(String, String)> {
    let stat = fs::read_to_string(path).ok()?;
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let state = stat[close + 1..].split_whitespace().next()?.to_string();
    Some((stat[open + 1..close].to_string(), state))
}

/// SIGKILLs everything in the cgroup `dir` and below, waits (at most [`EMPTY_LIMIT`]) for
/// it to empty, then removes it. Blocking.
fn kill_and_remove(dir: &Path) -> io::Result<()> {
    if populated(dir) {
        fs::write(dir.join("cgroup.kill"), "1")?;
        if !wait_empty_blocking(dir, EMPTY_LIMIT)? {
            return Err(io::Error::other(format!(
                "still populated {EMPTY_LIMIT:?} after cgroup.kill (a process in uninterruptible sleep?)"
            )));
        }
    }
    remove_dir_tree(dir)
}

/// Removes a cgroup directory and the cgroups below it, deepest first (a cgroup's
/// interface files go with its directory).
fn remove_dir_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_dir_tree(&entry.path())?;
        }
    }
    fs::remove_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kills_are_read_from_memory_events() {
        let events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(oom_kills(events), 1);
        assert_eq!(oom_kills("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"), 0);
        assert_eq!(oom_kills(""), 0);
    }

    #[test]
    fn finds_the_cgroup2_mount() {
        let line = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
        assert_eq!(
            parse_cgroup2_mount(line),
            Some(("/".to_string(), PathBuf::from("/sys/fs/cgroup/unified")))
        );
        let v1 = "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids";
        assert_eq!(parse_cgroup2_mount(v1), None);
        let spaced = "41 31 0:38 /a\\040b /mnt/cg\\040two rw shared:1 - cgroup2 none rw";
        assert_eq!(
            parse_cgroup2_mount(spaced),
            Some(("/a b".to_string(), PathBuf::from("/mnt/cg two")))
        );
    }

    #[test]
    fn limits_name_their_controllers() {
        assert!(Limits::default().wanted().is_empty());
        let both = Limits { pids_max: Some(10), memory_max: Some(1 << 20) };
        assert_eq!(
            both.wanted(),
            [("--session-pids-max", "pids"), ("--session-memory-max", "memory")]
        );
    }

    #[test]
    fn this_process_is_not_a_running_ptyd() {
        assert!(!ptyd_running(std::process::id()));
        assert!(!ptyd_running(u32::MAX));
        // Each thread has a stat of its own; this one runs.
        let tid = nix::unistd::gettid();
        let own = format!("/proc/self/task/{tid}/stat");
        let (_, state) = name_and_state(&own).expect("a thread's stat");
        assert_ne!(state, "Z");
    }

    #[test]
    fn the_refusal_names_flag_controller_and_hierarchy() {
        let e = CgroupError::ControllerMissing {
            flag: "--session-pids-max",
            controller: "pids",
            hierarchy: "/sys/fs/cgroup/unified".into(),
            why:
                "ptyd's cgroup / offers only [hugetlb] in /sys/fs/cgroup/unified/cgroup.controllers"
                    .into(),
        };
        assert_eq!(
            e.to_string(),
            "--session-pids-max needs the pids controller of the cgroup v2 hierarchy \
             (/sys/fs/cgroup/unified), but ptyd's cgroup / offers only [hugetlb] in \
             /sys/fs/cgroup/unified/cgroup.controllers"
        );
    }
}
