//! Who may take a slot: the pool's capacity, split by principal. Each connection carries
//! the [`Peer`] it was accepted with (SO_PEERCRED); a spawn is admitted against the
//! pool's capacity, the per-uid limit (`--max-sessions-per-uid`), and the share kept for
//! interactive sessions (`--interactive-reserve`: agents filling the pool cannot lock
//! people out). A [`Slot`] is the admission itself: dropping it gives everything back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The credentials a connection was accepted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Process id (0 when the kernel did not say).
    pub pid: i32,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "uid {} pid {}", self.uid, self.pid)
    }
}

/// What a session is for, as its spawner says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Class {
    /// A person at a terminal (a browser terminal): may use the reserved share.
    Interactive,
    /// Everything else: agents, scripts, `exec`.
    Agent,
}

/// Why a spawn was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Every slot is taken.
    #[error("pty pool is at capacity ({max})")]
    AtCapacity {
        /// The capacity.
        max: usize,
    },
    /// The uid has as many sessions as it may.
    #[error("session quota reached: {used}/{limit} for uid {uid}")]
    PerUid {
        /// The uid.
        uid: u32,
        /// Its running sessions.
        used: usize,
        /// Its limit.
        limit: usize,
    },
    /// Agents have used every slot not reserved for interactive sessions.
    #[error(
        "agent sessions are at their share: {used}/{limit} (the other {reserved} slots are \
         reserved for interactive sessions)"
    )]
    AgentShare {
        /// Running agent sessions.
        used: usize,
        /// Their share.
        limit: usize,
        /// Slots reserved for interactive sessions.
        reserved: usize,
    },
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    agents: usize,
    by_uid: HashMap<u32, usize>,
}

/// The admission policy and what is taken.
#[derive(Debug)]
pub struct Admission {
    capacity: usize,
    per_uid: Option<usize>,
    reserve: usize,
    counts: Mutex<Counts>,
}

impl Admission {
    /// `capacity` slots, at most `per_uid` per uid, `reserve` of them for interactive ones.
    pub fn new(capacity: usize, per_uid: Option<usize>, reserve: usize) -> Arc<Admission> {
        Arc::new(Admission { capacity, per_uid, reserve, counts: Mutex::default() })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Slots taken.
    pub fn active(&self) -> usize {
        self.counts().total
    }

    /// Sessions `uid` runs.
    pub fn used_by(&self, uid: u32) -> usize {
        self.counts().by_uid.get(&uid).copied().unwrap_or(0)
    }

    /// Admits a `class` session for `peer`, or says which limit refuses it.
    pub fn admit(self: &Arc<Self>, peer: &Peer, class: Class) -> Result<Slot, Refusal> {
        let mut c = self.counts();
        if c.total >= self.capacity {
            return Err(Refusal::AtCapacity { max: self.capacity });
        }
        let used = c.by_uid.get(&peer.uid).copied().unwrap_or(0);
        if let Some(limit) = self.per_uid.filter(|limit| used >= *limit) {
            return Err(Refusal::PerUid { uid: peer.uid, used, limit });
        }
        let share = self.capacity - self.reserve;
        if class == Class::Agent && c.agents >= share {
            return Err(Refusal::AgentShare {
                used: c.agents,
                limit: share,
                reserved: self.reserve,
            });
        }
        c.total += 1;
        if class == Class::Agent {
            c.agents += 1;
        }
        *c.by_uid.entry(peer.uid).or_default() += 1;
        Ok(Slot { admission: self.clone(), uid: peer.uid, class })
    }
}

impl Admission {
    /// A slot for a session that already runs (it crossed a live upgrade): counted like
    /// any other, never refused, even past a limit lowered since it started.
    pub fn carry(self: &Arc<Self>, uid: u32, class: Class) -> Slot {
        let mut c = self.counts();
        c.total += 1;
        if class == Class::Agent {
            c.agents += 1;
        }
        *c.by_uid.entry(uid).or_default() += 1;
        Slot { admission: self.clone(), uid, class }
    }
}

/// One admitted session's slot; dropping it frees the slot exactly once.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    uid: u32,
    class: Class,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.admission.counts();
        c.total -= 1;
        if self.class == Class::Agent {
            c.agents -= 1;
        }
        if let Some(n) = c.by_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                c.by_uid.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32) -> Peer {
        Peer { uid, gid: uid, pid: 1 }
    }

    #[test]
    fn per_uid_limits_and_the_interactive_share() {
        let a = Admission::new(4, Some(2), 1);
        let s1 = a.admit(&peer(1), Class::Agent).unwrap();
        let _s2 = a.admit(&peer(1), Class::Agent).unwrap();
        assert_eq!(
            a.admit(&peer(1), Class::Agent).unwrap_err(),
            Refusal::PerUid { uid: 1, used: 2, limit: 2 }
        );
        let _s3 = a.admit(&peer(2), Class::Agent).unwrap();
        let refusal = a.admit(&peer(3), Class::Agent).unwrap_err();
        assert_eq!(refusal, Refusal::AgentShare { used: 3, limit: 3, reserved: 1 });
        let _i = a.admit(&peer(3), Class::Interactive).unwrap();
        assert_eq!(
            a.admit(&peer(4), Class::Interactive).unwrap_err(),
            Refusal::AtCapacity { max: 4 }
        );
        drop(s1);
        assert_eq!(a.active(), 3);
        assert_eq!(a.used_by(1), 1);
        a.admit(&peer(1), Class::Agent).unwrap();
    }
}
