//! The terminal registry: id → status (Active / Disconnected / Dead) with its timestamps,
//! the grace timers that kill a terminal nobody returned to, and the remembered Dead set.
//!
//! Every transition happens under one lock and bumps the terminal's `epoch`; a timer only
//! acts if the epoch it was started in is still current, so a reconnect cancels a grace
//! timer without having to find and abort it. The registry itself never blocks and never
//! talks to ptyd: callers do that with the answers it gives.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipc_proto::{EndReason, SessionId, SessionInfo, SessionState};
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{PROFILE_LABEL, TERMINAL_LABEL};
use crate::daemon_link::DaemonLink;
use crate::metrics::Metrics;
use crate::viewers::{Joining, ResizePolicy, Role, Viewer, Viewers};

/// Where a terminal is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    /// A socket is open.
    Active,
    /// No socket; the program runs and ptyd keeps its output until the grace ends.
    Disconnected,
    /// Kept on purpose (`POST /api/terminals/{id}/detach`): no socket and no grace; the
    /// program runs until ptyd's idle timeout or a `DELETE`, and a socket reopens it.
    Detached,
    /// Killed or exited; the id only earns 410 Gone.
    Dead,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Why a terminal is Dead: its session's own end, as ptyd recorded it, or what the
/// bridge did. On the wire (`end_reason`) a word: ptyd's (`exited`, `killed`,
/// `idle_timeout`, …), `grace_expired`, `deleted`, or `lost` (ptyd no longer runs it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The session ended in ptyd for this reason.
    Session(EndReason),
    /// Nobody came back within the grace; the bridge killed it.
    GraceExpired,
    /// Deleted through the API.
    Deleted,
    /// ptyd no longer runs it (ptyd restarted, or forgot the session).
    Lost,
}

impl Ending {
    /// The wire word.
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Session(reason) => reason.as_str(),
            Ending::GraceExpired => "grace_expired",
            Ending::Deleted => "deleted",
            Ending::Lost => "lost",
        }
    }
}

impl Serialize for Ending {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the API shows of one terminal.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TerminalInfo {
    /// The ptyd session id.
    pub id: SessionId,
    /// Active, Disconnected or Dead.
    pub status: Status,
    /// The program's pid (and process group).
    pub pid: u32,
    /// The profile it was started from, when known.
    pub profile: Option<String>,
    /// Creation time, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// Last data in either direction (or creation), ms since the Unix epoch.
    pub last_activity_ms: u64,
    /// When the current status began, ms since the Unix epoch.
    pub status_since_ms: u64,
    /// Why it is Dead; absent until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<Ending>,
}

/// Terminals per status, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    /// Active terminals.
    pub active: usize,
    /// Disconnected terminals.
    pub disconnected: usize,
    /// Detached terminals.
    pub detached: usize,
    /// Dead terminals still remembered.
    pub dead: usize,
}

/// Why the bridge itself ends a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Another socket connected to the same terminal.
    TakenOver,
    /// The terminal was deleted through the API.
    Deleted,
    /// The terminal was detached through the API: kept, without this socket.
    Detached,
    /// The share link this socket was opened through was revoked.
    Revoked,
}

/// Tells one socket loop to stop, with a reason. Cloned between the registry and the loop.
#[derive(Debug, Clone, Default)]
pub struct StopSignal {
    token: CancellationToken,
    reason: Arc<Mutex<Option<StopReason>>>,
}

impl StopSignal {
    /// A signal not yet given.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives the signal; the first reason wins.
    pub fn stop(&self, reason: StopReason) {
        self.reason.lock().unwrap().get_or_insert(reason);
        self.token.cancel();
    }

    /// Resolves once the signal is given, with its reason.
    pub async fn stopped(&self) -> StopReason {
        self.token.cancelled().await;
        self.reason.lock().unwrap().unwrap_or(StopReason::TakenOver)
    }
}

/// Last data time of a terminal, shared with its socket loop (ms since the Unix epoch).
pub type ActivityClock = Arc<AtomicU64>;

/// A new terminal to register.
#[derive(Debug, Clone)]
pub struct NewTerminal {
    /// The ptyd session.
    pub id: SessionId,
    /// Its pid.
    pub pid: u32,
    /// Its profile name.
    pub profile: Option<String>,
    /// Creation time, ms since the epoch.
    pub created_at_ms: u64,
}

/// A timer to start: kill `id` after `after` unless its epoch moved on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraceTimer {
    /// The terminal.
    pub id: SessionId,
    /// The epoch the timer belongs to.
    pub epoch: u64,
    /// The delay.
    pub after: Duration,
}

/// What `activate` found and did.
#[derive(Debug, Clone)]
pub struct Activation {
    /// This connection's generation; pass it back to `disconnect`.
    pub gen: u64,
    /// The status before (Disconnected, or Active when joined or taken over).
    pub previous: Status,
    /// How long it had been Disconnected, when a socket had been connected before.
    pub reconnected_after: Option<Duration>,
    /// How many other sockets were told to stop (a takeover).
    pub took_over: usize,
    /// Viewers now, this one included.
    pub viewers: usize,
    /// The terminal's size as the resize policy sets it, for this socket to announce.
    pub sizes: tokio::sync::watch::Receiver<Option<(u16, u16)>>,
    /// This connection's stop signal.
    pub stop: StopSignal,
    /// The terminal's activity clock.
    pub activity: ActivityClock,
}

/// Why a lookup failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Never known (or forgotten).
    NotFound,
    /// Known and Dead, for this reason.
    Dead(Option<Ending>),
}

/// What a reconciliation with ptyd's session list found.
#[derive(Debug, Default, PartialEq)]
pub struct Reconciled {
    /// Running labelled sessions adopted as Disconnected, with their grace timers.
    pub recovered: Vec<GraceTimer>,
    /// Terminals ptyd no longer runs, now Dead, with their previous status.
    pub dead: Vec<(SessionId, Status)>,
    /// Terminals Dead here that ptyd still runs (an earlier kill was lost).
    pub kill_again: Vec<SessionId>,
}

struct Entry {
    info: TerminalInfo,
    changed_at: Instant,
    epoch: u64,
    gen: u64,
    ever_connected: bool,
    viewers: Viewers,
    activity: ActivityClock,
}

/// What a socket's end changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Departure {
    /// The last viewer left: Disconnected, with this grace timer to start.
    pub timer: Option<GraceTimer>,
    /// The terminal's size by the viewers left, when that changed.
    pub resize: Option<(u16, u16)>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<SessionId, Entry>,
    dead_order: VecDeque<SessionId>,
}

/// All terminals of this bridge.
pub struct Registry {
    inner: Mutex<Inner>,
    grace: Duration,
    claim_timeout: Duration,
    max_dead: usize,
    resize_policy: ResizePolicy,
}

/// Now, in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Registry {
    /// An empty registry with these timings.
    pub fn new(grace: Duration, claim_timeout: Duration, max_dead: usize) -> Registry {
        let resize_policy = ResizePolicy::default();
        Registry { inner: Mutex::default(), grace, claim_timeout, max_dead, resize_policy }
    }

    /// The same, sizing terminals by `policy`.
    pub fn with_resize_policy(mut self, policy: ResizePolicy) -> Registry {
        self.resize_policy = policy;
        self
    }

    /// Registers a terminal just spawned: Disconnected until its first socket, which has
    /// the claim timeout to come.
    pub fn insert_new(&self, t: NewTerminal, now: Instant) -> GraceTimer {
        let mut inner = self.inner.lock().unwrap();
        let mut entry = new_entry(t, now, false);
        // A reconciliation may have adopted it between the spawn and now: supersede that
        // entry's timer.
        if let Some(old) = inner.entries.get(&entry.info.id) {
            entry.epoch = old.epoch + 1;
        }
        let timer = GraceTimer { id: entry.info.id, epoch: entry.epoch, after: self.claim_timeout };
        inner.entries.insert(entry.info.id, entry);
        timer
    }

    /// One terminal's details.
    pub fn get(&self, id: SessionId) -> Option<TerminalInfo> {
        let inner = self.inner.lock().unwrap();
        inner.entries.get(&id).map(Entry::snapshot)
    }

    /// Every terminal, oldest first.
    pub fn list(&self) -> Vec<TerminalInfo> {
        let inner = self.inner.lock().unwrap();
        let mut all: Vec<_> = inner.entries.values().map(Entry::snapshot).collect();
        all.sort_by_key(|t| (t.created_at_ms, t.id));
        all
    }

    /// Terminals per status.
    pub fn counts(&self) -> StatusCounts {
        let inner = self.inner.lock().unwrap();
        let mut c = StatusCounts::default();
        for e in inner.entries.values() {
            match e.info.status {
                Status::Active => c.active += 1,
                Status::Disconnected => c.disconnected += 1,
                Status::Detached => c.detached += 1,
                Status::Dead => c.dead += 1,
            }
        }
        c
    }

    /// The status of a terminal that can still be used, or why it cannot.
    pub fn check(&self, id: SessionId) -> Result<Status, Missing> {
        match self.inner.lock().unwrap().entries.get(&id).map(|e| &e.info) {
            None => Err(Missing::NotFound),
            Some(info) if info.status == Status::Dead => Err(Missing::Dead(info.end_reason)),
            Some(info) => Ok(info.status),
        }
    }

    /// A socket connects with `role`: Active, beside the viewers already there or, with
    /// [`Joining::TakeOver`], in their place.
    pub fn activate(
        &self,
        id: SessionId,
        now: Instant,
        role: Role,
        joining: Joining,
        share: Option<String>,
    ) -> Result<Activation, Missing> {
        let mut inner = self.inner.lock().unwrap();
        let e = inner.entries.get_mut(&id).ok_or(Missing::NotFound)?;
        let previous = e.info.status;
        if previous == Status::Dead {
            return Err(Missing::Dead(e.info.end_reason));
        }
        let reconnected_after = (previous == Status::Disconnected && e.ever_connected)
            .then(|| now.saturating_duration_since(e.changed_at));
        let mut took_over = 0;
        if joining == Joining::TakeOver {
            for (_, old) in std::mem::take(&mut e.viewers.by_gen) {
                old.stop.stop(StopReason::TakenOver);
                took_over += 1;
            }
        }
        let stop = StopSignal::new();
        e.gen += 1;
        e.viewers.by_gen.insert(e.gen, Viewer { stop: stop.clone(), role, size: None, share });
        e.ever_connected = true;
        if previous != Status::Active {
            e.set_status(Status::Active, now);
        }
        Ok(Activation {
            gen: e.gen,
            previous,
            reconnected_after,
            took_over,
            viewers: e.viewers.by_gen.len(),
            sizes: e.viewers.sizes(),
            stop,
            activity: e.activity.clone(),
        })
    }

    /// Closes the sockets of terminal `id` opened through any of the share tokens `shares`
    /// (just revoked); returns how many.
    pub fn revoke_shares(&self, id: SessionId, shares: &[String]) -> usize {
        let mut inner = self.inner.lock().unwrap();
        let Some(e) = inner.entries.get_mut(&id) else { return 0 };
        let mut closed = 0;
        for viewer in e.viewers.by_gen.values() {
            if viewer.share.as_ref().is_some_and(|s| shares.contains(s)) {
                viewer.stop.stop(StopReason::Revoked);
                closed += 1;
            }
        }
        closed
    }

    /// Viewer `gen`'s window is `cols` × `rows`: the terminal's new size if that changes
    /// it (read-only viewers never do).
    pub fn viewer_size(&self, id: SessionId, gen: u64, cols: u16, rows: u16) -> Option<(u16, u16)> {
        let mut inner = self.inner.lock().unwrap();
        let e = inner.entries.get_mut(&id)?;
        e.viewers.report(gen, cols, rows, self.resize_policy)
    }

    /// The socket of generation `gen` ended. The last one leaves the terminal
    /// Disconnected, with a grace timer to start; one of several may change its size.
    pub fn disconnect(&self, id: SessionId, gen: u64, now: Instant) -> Departure {
        let mut inner = self.inner.lock().unwrap();
        let Some(e) = inner.entries.get_mut(&id) else { return Departure::default() };
        if e.viewers.by_gen.remove(&gen).is_none() || e.info.status != Status::Active {
            return Departure::default();
        }
        if !e.viewers.by_gen.is_empty() {
            return Departure { timer: None, resize: e.viewers.settle(self.resize_policy) };
        }
        e.viewers.size = None;
        e.set_status(Status::Disconnected, now);
        Departure {
            timer: Some(GraceTimer { id, epoch: e.epoch, after: self.grace }),
            resize: None,
        }
    }

    /// Keeps a terminal without a socket and without a grace period: its socket, if any,
    /// is told to stop, and a pending grace timer no longer applies. Returns the previous
    /// status.
    pub fn detach(&self, id: SessionId, now: Instant) -> Result<Status, Missing> {
        let mut inner = self.inner.lock().unwrap();
        let e = inner.entries.get_mut(&id).ok_or(Missing::NotFound)?;
        let previous = e.info.status;
        match previous {
            Status::Dead => return Err(Missing::Dead(e.info.end_reason)),
            Status::Detached => return Ok(previous),
            Status::Active | Status::Disconnected => {}
        }
        for (_, viewer) in std::mem::take(&mut e.viewers.by_gen) {
            viewer.stop.stop(StopReason::Detached);
        }
        e.viewers.size = None;
        // A new epoch: a grace timer started earlier no longer applies.
        e.set_status(Status::Detached, now);
        Ok(previous)
    }

    /// A grace timer fired: Dead if nothing happened since it started. Returns whether
    /// the terminal must now be killed.
    pub fn expire(&self, timer: &GraceTimer, now: Instant) -> bool {
        let mut inner = self.inner.lock().unwrap();
        let Some(e) = inner.entries.get_mut(&timer.id) else { return false };
        if e.epoch != timer.epoch || e.info.status != Status::Disconnected {
            return false;
        }
        e.set_status(Status::Dead, now);
        e.info.end_reason = Some(Ending::GraceExpired);
        inner.dead_order.push_back(timer.id);
        self.prune(&mut inner);
        true
    }

    /// Marks a terminal Dead for `ending` (its program exited, or it was deleted), telling
    /// its socket, if any, to stop with `reason`. Returns the previous status unless it was
    /// Dead already.
    pub fn mark_dead(
        &self,
        id: SessionId,
        ending: Ending,
        reason: Option<StopReason>,
        now: Instant,
    ) -> Option<Status> {
        let mut inner = self.inner.lock().unwrap();
        let e = inner.entries.get_mut(&id)?;
        let previous = e.info.status;
        if previous == Status::Dead {
            return None;
        }
        for (_, viewer) in std::mem::take(&mut e.viewers.by_gen) {
            if let Some(reason) = reason {
                viewer.stop.stop(reason);
            }
        }
        e.set_status(Status::Dead, now);
        e.info.end_reason = Some(ending);
        inner.dead_order.push_back(id);
        self.prune(&mut inner);
        Some(previous)
    }

    /// Aligns the registry with ptyd's session list: adopts running sessions carrying the
    /// bridge's label (after a bridge restart), buries terminals ptyd no longer runs (after a
    /// ptyd restart), and names Dead terminals ptyd still runs.
    pub fn reconcile(&self, sessions: &[SessionInfo], now: Instant) -> Reconciled {
        let mut out = Reconciled::default();
        let mut inner = self.inner.lock().unwrap();
        let running: HashMap<SessionId, &SessionInfo> = sessions
            .iter()
            .filter(|s| s.state == SessionState::Running && is_ours(s))
            .map(|s| (s.session, s))
            .collect();
        for (id, s) in &running {
            match inner.entries.get(id).map(|e| e.info.status) {
                None => {
                    let t = NewTerminal {
                        id: *id,
                        pid: s.pid,
                        profile: s.labels.get(PROFILE_LABEL).cloned(),
                        created_at_ms: s.created_at_ms,
                    };
                    let entry = new_entry(t, now, true);
                    entry.activity.store(s.last_activity_ms, Ordering::Relaxed);
                    inner.entries.insert(*id, entry);
                    out.recovered.push(GraceTimer { id: *id, epoch: 0, after: self.grace });
                }
                Some(Status::Dead) => out.kill_again.push(*id),
                Some(_) => {}
            }
        }
        let gone: Vec<(SessionId, Status)> = inner
            .entries
            .iter()
            .filter(|(id, e)| e.info.status != Status::Dead && !running.contains_key(id))
            .map(|(id, e)| (*id, e.info.status))
            .collect();
        for (id, status) in gone {
            if let Some(e) = inner.entries.get_mut(&id) {
                e.viewers = Viewers::default();
                e.set_status(Status::Dead, now);
                e.info.end_reason = Some(Ending::Lost);
            }
            inner.dead_order.push_back(id);
            out.dead.push((id, status));
        }
        self.prune(&mut inner);
        out.recovered.sort_by_key(|t| t.id);
        out.dead.sort_by_key(|d| d.0);
        out
    }

    fn prune(&self, inner: &mut Inner) {
        while inner.dead_order.len() > self.max_dead {
            if let Some(id) = inner.dead_order.pop_front() {
                inner.entries.remove(&id);
            }
        }
    }
}

/// Whether a ptyd session is one of the bridge's terminals.
pub fn is_ours(s: &SessionInfo) -> bool {
    s.labels.get(TERMINAL_LABEL.0).map(String::as_str) == Some(TERMINAL_LABEL.1)
}

fn new_entry(t: NewTerminal, now: Instant, ever_connected: bool) -> Entry {
    let wall = now_ms();
    Entry {
        activity: Arc::new(AtomicU64::new(t.created_at_ms)),
        info: TerminalInfo {
            id: t.id,
            status: Status::Disconnected,
            pid: t.pid,
            profile: t.profile,
            created_at_ms: t.created_at_ms,
            last_activity_ms: t.created_at_ms,
            status_since_ms: wall,
            end_reason: None,
        },
        changed_at: now,
        epoch: 0,
        gen: 0,
        ever_connected,
        viewers: Viewers::default(),
    }
}

impl Entry {
    fn set_status(&mut self, status: Status, now: Instant) {
        self.info.status = status;
        self.info.status_since_ms = now_ms();
        self.changed_at = now;
        self.epoch += 1;
    }

    fn snapshot(&self) -> TerminalInfo {
        let mut info = self.info.clone();
        info.last_activity_ms = info.last_activity_ms.max(self.activity.load(Ordering::Relaxed));
        info
    }
}

/// Starts `timer`: when it fires and the terminal is still Disconnected in the same
/// epoch, the terminal becomes Dead and ptyd kills its process group.
pub fn spawn_grace_timer(
    registry: Arc<Registry>,
    daemon: Arc<DaemonLink>,
    metrics: Metrics,
    timer: GraceTimer,
) {
    // A root span: the timer outlives whatever request or socket started it.
    let span = tracing::info_span!(parent: None, "terminal", terminal = %timer.id);
    tokio::spawn(
        async move {
            tokio::time::sleep(timer.after).await;
            if !registry.expire(&timer, Instant::now()) {
                return;
            }
            tracing::error!(
                "Grace period expired ({}) without reconnection",
                humantime::format_duration(timer.after)
            );
            metrics.grace_expired();
            tracing::info!("Killing PTY process for terminal {}", timer.id);
            tracing::debug!("Status transition: Disconnected → Dead");
            daemon.kill(timer.id).await;
        }
        .instrument(span),
    );
}

#[cfg(test)]
#[path = "terminals_tests.rs"]
mod tests;
