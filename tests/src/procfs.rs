//! Process facts read from `/proc`: children and their states, open file descriptors,
//! lookups by name and cgroups, for checking that the daemon reaps, closes and kills what
//! it should.
//!
//! Tests run in parallel inside one process, so prefer scoped lookups
//! ([`children_of`], [`descendants_of`] of the daemon's pid) or a unique command line
//! ([`pids_with_cmdline`], e.g. `sleep 31337`) over global ones like
//! [`pids_with_comm`].

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The fields of `/proc/<pid>/stat` the tests use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// Process id.
    pub pid: u32,
    /// The executable's name as the kernel keeps it (at most 15 bytes), e.g. `sleep`.
    pub comm: String,
    /// State: `R` running, `S` sleeping, `D` disk wait, `Z` zombie, `T` stopped, …
    pub state: char,
    /// Parent pid.
    pub ppid: u32,
    /// Process group id.
    pub pgrp: u32,
    /// Session id.
    pub session: u32,
}

/// Parses the text of a `/proc/<pid>/stat` file. The command name may itself contain
/// spaces and parentheses, so it is taken up to the *last* `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_string();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgrp = rest.next()?.parse().ok()?;
    let session = rest.next()?.parse().ok()?;
    Some(ProcStat { pid, comm, state, ppid, pgrp, session })
}

/// The stat of `pid`, or `None` when no such process exists (any more).
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The stats of every process visible in `/proc` (processes that vanish while scanning
/// are skipped).
pub fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(proc_stat)
        .collect()
}

/// Direct children of `pid` as `(pid, state, comm)`, zombies included, sorted by pid.
pub fn children_of(pid: u32) -> Vec<(u32, char, String)> {
    let mut kids: Vec<_> = all_processes()
        .into_iter()
        .filter(|p| p.ppid == pid)
        .map(|p| (p.pid, p.state, p.comm))
        .collect();
    kids.sort();
    kids
}

/// ptyd's spawn helper: the one live child of `ptyd` named `ptyd-spawner`.
pub fn spawn_helper_of(ptyd: u32) -> anyhow::Result<u32> {
    use anyhow::Context;
    children_of(ptyd)
        .into_iter()
        .find(|(_, state, comm)| comm == "ptyd-spawner" && *state != 'Z')
        .map(|(pid, _, _)| pid)
        .with_context(|| format!("no ptyd-spawner under ptyd: {:?}", children_of(ptyd)))
}

/// A process stopped (SIGSTOP) until this is dropped (SIGCONT).
pub struct Stopped(nix::unistd::Pid);

impl Stopped {
    /// Stops `pid`.
    pub fn new(pid: u32) -> anyhow::Result<Stopped> {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::SIGSTOP)?;
        Ok(Stopped(pid))
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::SIGCONT);
    }
}

/// All descendants of `pid` (children, grandchildren, …) as `(pid, state, comm)`,
/// sorted by pid.
pub fn descendants_of(pid: u32) -> Vec<(u32, char, String)> {
    let procs = all_processes();
    let mut inside: HashSet<u32> = HashSet::from([pid]);
    // Iterate to a fixed point: parents may be listed after their children.
    loop {
        let before = inside.len();
        for p in &procs {
            if inside.contains(&p.ppid) {
                inside.insert(p.pid);
            }
        }
        if inside.len() == before {
            break;
        }
    }
    let mut out: Vec<_> = procs
        .into_iter()
        .filter(|p| p.pid != pid && inside.contains(&p.pid))
        .map(|p| (p.pid, p.state, p.comm))
        .collect();
    out.sort();
    out
}

/// Children of `pid` that are zombies (exited but not reaped), as `(pid, state, comm)`.
pub fn zombie_children(pid: u32) -> Vec<(u32, char, String)> {
    children_of(pid).into_iter().filter(|(_, state, _)| *state == 'Z').collect()
}

/// The number of open file descriptors of `pid` (entries of `/proc/<pid>/fd`).
pub fn fd_count(pid: u32) -> io::Result<usize> {
    Ok(fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// The open file descriptors of `pid` and what each points to, e.g.
/// `(9, "/dev/ptmx")` or `(12, "socket:[123456]")`, sorted by fd. Descriptors closed
/// while reading are skipped.
pub fn fd_targets(pid: u32) -> io::Result<Vec<(i32, String)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(entry) = entry else { continue };
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(target) = fs::read_link(entry.path()) {
            out.push((fd, target.to_string_lossy().into_owned()));
        }
    }
    out.sort();
    Ok(out)
}

/// The resident set size of `pid` in bytes (`VmRSS` of `/proc/<pid>/status`), or `None`
/// when the process is gone or is a zombie.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    parse_vm_rss(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// The `VmRSS:` line of a `/proc/<pid>/status` text, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// Whether `pid` exists and is not a zombie (a zombie has exited; only its entry is
/// left for its parent to reap).
pub fn process_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|p| p.state != 'Z')
}

/// Live (non-zombie) processes whose kernel name (`comm`) is exactly `name`, sorted.
/// Other tests may run the same program at the same time: scope the result (e.g. with
/// [`descendants_of`]) when that matters.
pub fn pids_with_comm(name: &str) -> Vec<u32> {
    let mut pids: Vec<_> = all_processes()
        .into_iter()
        .filter(|p| p.comm == name && p.state != 'Z')
        .map(|p| p.pid)
        .collect();
    pids.sort();
    pids
}

/// The argument vector of `pid` from `/proc/<pid>/cmdline` (empty for zombies and
/// kernel threads), or `None` when the process is gone.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Live processes whose command line, arguments joined by single spaces, contains
/// `needle` (e.g. `"sleep 31337"`), sorted. The calling process is never included.
pub fn pids_with_cmdline(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut pids: Vec<_> = all_processes()
        .into_iter()
        .filter(|p| p.pid != me && p.state != 'Z')
        .filter(|p| cmdline(p.pid).is_some_and(|args| args.join(" ").contains(needle)))
        .map(|p| p.pid)
        .collect();
    pids.sort();
    pids
}

/// The mount point of the cgroup v2 hierarchy (the first `cgroup2` line of
/// `/proc/self/mountinfo`), if one is mounted.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        let mount = fields.get(4).map(PathBuf::from);
        mount.filter(|_| fields.get(sep + 1) == Some(&"cgroup2"))
    })
}

/// The cgroup v2 directory of `pid`: its `0::` line of `/proc/<pid>/cgroup` under
/// [`cgroup2_mount`]. `None` when the process is gone or there is no cgroup v2.
pub fn cgroup_dir(pid: u32) -> Option<PathBuf> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(cgroup2_mount()?.join(path.trim_start_matches('/')))
}

/// The processes in the cgroup `dir` (its `cgroup.procs`), empty when it is gone.
pub fn cgroup_procs(dir: &Path) -> Vec<u32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

/// The controllers the cgroup `dir` offers its children (its `cgroup.controllers`).
pub fn cgroup_controllers(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("cgroup.controllers"))
        .map(|t| t.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The child cgroups of `dir` whose names start with `prefix`, sorted.
pub fn child_cgroups(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(prefix)))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Kills everything in the cgroup `dir` and below (`cgroup.kill`), waits for it to
/// empty and removes it, deepest first. Best effort, for cleaning up after a test.
pub fn kill_and_remove_cgroup(dir: &Path) {
    if fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        let populated = || {
            fs::read_to_string(dir.join("cgroup.events"))
                .is_ok_and(|t| t.lines().any(|l| l == "populated 1"))
        };
        let _ = crate::wait_until(crate::TIMEOUT, || !populated());
    }
    remove_cgroup_tree(dir);
}

fn remove_cgroup_tree(dir: &Path) {
    for child in child_cgroups(dir, "") {
        remove_cgroup_tree(&child);
    }
    let _ = fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_comm_with_spaces_and_parens() {
        let stat = parse_stat("4242 (my (odd) name) S 1 4242 4242 34816 4242 4194560 0 0").unwrap();
        assert_eq!(stat.pid, 4242);
        assert_eq!(stat.comm, "my (odd) name");
        assert_eq!(stat.state, 'S');
        assert_eq!((stat.ppid, stat.pgrp, stat.session), (1, 4242, 4242));
    }

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tptyd\nVmHWM:\t   20000 kB\nVmRSS:\t   12345 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss(status), Some(12345 * 1024));
        assert_eq!(parse_vm_rss("Name:\tkworker\n"), None);
        assert!(rss_bytes(std::process::id()).is_some_and(|b| b > 0));
    }

    #[test]
    fn sees_this_process_and_its_child() {
        let me = std::process::id();
        assert!(process_alive(me));
        assert!(fd_count(me).unwrap() >= 3);
        assert!(!fd_targets(me).unwrap().is_empty());
        let mut child = std::process::Command::new("sleep").arg("30.25").spawn().unwrap();
        let kids = children_of(me);
        assert!(
            kids.iter().any(|(pid, _, comm)| *pid == child.id() && comm == "sleep"),
            "{kids:?}"
        );
        assert!(descendants_of(me).iter().any(|(pid, _, _)| *pid == child.id()));
        assert!(pids_with_comm("sleep").contains(&child.id()));
        assert_eq!(pids_with_cmdline("sleep 30.25"), vec![child.id()]);
        child.kill().unwrap();
        // Killed but not yet waited for: a zombie child.
        assert!(crate::wait_until(crate::TIMEOUT, || zombie_children(me)
            .iter()
            .any(|(pid, _, _)| *pid == child.id())));
        assert!(!process_alive(child.id()));
        child.wait().unwrap();
    }
}
