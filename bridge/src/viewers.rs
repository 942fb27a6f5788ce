//! Several sockets on one terminal: each is a viewer with a role, and the terminal's size
//! follows the read-write viewers' windows by a policy (`--resize-policy`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::terminals::StopSignal;

/// What a viewer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Types into the terminal and sizes it.
    ReadWrite,
    /// Watches: its input is refused with an `error` message, its size is not counted.
    ReadOnly,
}

impl Role {
    /// The wire word.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ReadWrite => "read-write",
            Role::ReadOnly => "read-only",
        }
    }

    /// The `?role=` query value (`read-write`, the default, or `read-only`).
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "read-write" | "rw" => Some(Role::ReadWrite),
            "read-only" | "ro" => Some(Role::ReadOnly),
            _ => None,
        }
    }
}

/// How a socket joins a terminal that has viewers already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joining {
    /// Beside them (the default).
    Join,
    /// In their place: each of them is closed with 4000 (`?takeover=1`).
    TakeOver,
}

/// Which size the terminal takes from its read-write viewers' windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizePolicy {
    /// The smallest columns and rows among them (as tmux does), so everyone sees it all.
    #[default]
    Smallest,
    /// The largest.
    Largest,
    /// The window that last reported its size.
    Latest,
}

/// One socket on a terminal.
#[derive(Debug)]
pub struct Viewer {
    /// Tells its socket loop to stop.
    pub stop: StopSignal,
    /// What it may do.
    pub role: Role,
    /// Its window, once it said, with the sequence number of that report.
    pub size: Option<((u16, u16), u64)>,
    /// The share link it was opened through, if any.
    pub share: Option<String>,
}

/// A terminal's viewers by generation, and the size it has.
#[derive(Debug)]
pub struct Viewers {
    pub by_gen: BTreeMap<u64, Viewer>,
    /// The size the terminal was last given through the bridge.
    pub size: Option<(u16, u16)>,
    reports: u64,
    /// The size, for every viewer's socket to announce.
    announce: tokio::sync::watch::Sender<Option<(u16, u16)>>,
}

impl Default for Viewers {
    fn default() -> Self {
        let announce = tokio::sync::watch::channel(None).0;
        Viewers { by_gen: BTreeMap::new(), size: None, reports: 0, announce }
    }
}

impl Viewers {
    /// Changes of the terminal's size, for a viewer's socket to announce.
    pub fn sizes(&self) -> tokio::sync::watch::Receiver<Option<(u16, u16)>> {
        self.announce.subscribe()
    }

    /// Records viewer `gen`'s window; returns the terminal's new size if it changes.
    pub fn report(
        &mut self,
        gen: u64,
        cols: u16,
        rows: u16,
        policy: ResizePolicy,
    ) -> Option<(u16, u16)> {
        self.reports += 1;
        let seq = self.reports;
        let v = self.by_gen.get_mut(&gen)?;
        if v.role == Role::ReadOnly {
            return None;
        }
        v.size = Some(((cols, rows), seq));
        self.settle(policy)
    }

    /// The terminal's size by `policy` now; returns it if it changed.
    pub fn settle(&mut self, policy: ResizePolicy) -> Option<(u16, u16)> {
        let sizes = self.by_gen.values().filter(|v| v.role == Role::ReadWrite);
        let sizes: Vec<_> = sizes.filter_map(|v| v.size).collect();
        let wanted = match policy {
            ResizePolicy::Smallest => {
                sizes.iter().map(|(s, _)| *s).reduce(|(c, r), (c2, r2)| (c.min(c2), r.min(r2)))
            }
            ResizePolicy::Largest => {
                sizes.iter().map(|(s, _)| *s).reduce(|(c, r), (c2, r2)| (c.max(c2), r.max(r2)))
            }
            ResizePolicy::Latest => sizes.iter().max_by_key(|(_, seq)| *seq).map(|(s, _)| *s),
        }?;
        (self.size != Some(wanted)).then(|| {
            self.size = Some(wanted);
            self.announce.send_replace(Some(wanted));
            wanted
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewers(roles: &[Role]) -> Viewers {
        let mut v = Viewers::default();
        for (gen, role) in roles.iter().enumerate() {
            let viewer = Viewer { stop: StopSignal::new(), role: *role, size: None, share: None };
            v.by_gen.insert(gen as u64, viewer);
        }
        v
    }

    #[test]
    fn the_size_follows_the_read_write_viewers_by_policy() {
        let (rw, ro) = (Role::ReadWrite, Role::ReadOnly);
        let mut v = viewers(&[rw, rw, ro]);
        let p = ResizePolicy::Smallest;
        assert_eq!(v.report(0, 120, 40, p), Some((120, 40)));
        assert_eq!(v.report(1, 80, 50, p), Some((80, 40)));
        // A read-only viewer's window does not count.
        assert_eq!(v.report(2, 20, 10, p), None);
        // Unchanged: nothing to send.
        assert_eq!(v.report(1, 80, 50, p), None);
        // The smaller one leaves: the terminal grows to the one left.
        v.by_gen.remove(&1);
        assert_eq!(v.settle(p), Some((120, 40)));

        let mut v = viewers(&[rw, rw]);
        v.report(0, 120, 40, ResizePolicy::Largest);
        assert_eq!(v.report(1, 80, 50, ResizePolicy::Largest), Some((120, 50)));
        let mut v = viewers(&[rw, rw]);
        v.report(0, 120, 40, ResizePolicy::Latest);
        assert_eq!(v.report(1, 80, 50, ResizePolicy::Latest), Some((80, 50)));
        assert_eq!(v.report(0, 120, 40, ResizePolicy::Latest), Some((120, 40)));
    }

    #[test]
    fn roles_parse_from_the_query() {
        assert_eq!(Role::parse("read-only"), Some(Role::ReadOnly));
        assert_eq!(Role::parse("ro"), Some(Role::ReadOnly));
        assert_eq!(Role::parse("read-write"), Some(Role::ReadWrite));
        assert_eq!(Role::parse("admin"), None);
    }
}
