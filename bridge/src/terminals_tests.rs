//! Unit tests of the registry's transitions, driven with explicit instants.

use super::*;
use crate::viewers::{Joining, Role};

const RW: Role = Role::ReadWrite;
const JOIN: Joining = Joining::Join;
use std::collections::BTreeMap;

const GRACE: Duration = Duration::from_secs(10);
const CLAIM: Duration = Duration::from_secs(30);

fn registry() -> Registry {
    Registry::new(GRACE, CLAIM, 2)
}

fn new_terminal(reg: &Registry, now: Instant) -> (SessionId, GraceTimer) {
    let id = SessionId::new();
    let t = NewTerminal { id, pid: 42, profile: Some("default".into()), created_at_ms: 1 };
    (id, reg.insert_new(t, now))
}

fn session(id: SessionId, state: SessionState, ours: bool) -> SessionInfo {
    let mut labels = BTreeMap::new();
    if ours {
        labels.insert(TERMINAL_LABEL.0.to_string(), TERMINAL_LABEL.1.to_string());
    }
    SessionInfo {
        session: id,
        pid: 7,
        command: "sh".into(),
        args: vec![],
        cwd: None,
        labels,
        cols: 80,
        rows: 24,
        state,
        created_at_ms: 5,
        last_activity_ms: 6,
        attached: 0,
        output_offset: 0,
        idle_timeout_ms: 0,
        exit: None,
        end_reason: None,
        upgrades: 0,
    }
}

#[test]
fn new_terminal_waits_for_its_first_socket() {
    let reg = registry();
    let t0 = Instant::now();
    let (id, claim) = new_terminal(&reg, t0);
    assert_eq!(claim.after, CLAIM);
    assert_eq!(reg.check(id), Ok(Status::Disconnected));
    let a = reg.activate(id, t0 + Duration::from_secs(1), RW, JOIN, None).unwrap();
    assert_eq!(a.previous, Status::Disconnected);
    assert_eq!(a.reconnected_after, None, "a first connection is not a reconnect");
    assert_eq!(a.took_over, 0);
    // The claim timer started before the activation no longer applies.
    assert!(!reg.expire(&claim, t0 + CLAIM));
    assert_eq!(reg.check(id), Ok(Status::Active));
}

#[test]
fn disconnect_then_reconnect_within_grace() {
    let reg = registry();
    let t0 = Instant::now();
    let (id, _) = new_terminal(&reg, t0);
    let a = reg.activate(id, t0, RW, JOIN, None).unwrap();
    let timer = reg.disconnect(id, a.gen, t0 + Duration::from_secs(1)).timer.unwrap();
    assert_eq!(timer.after, GRACE);
    assert_eq!(reg.check(id), Ok(Status::Disconnected));
    let b = reg.activate(id, t0 + Duration::from_secs(4), RW, JOIN, None).unwrap();
    assert_eq!(b.reconnected_after, Some(Duration::from_secs(3)));
    assert!(!reg.expire(&timer, t0 + Duration::from_secs(11)), "reconnect cancels grace");
    assert_eq!(reg.check(id), Ok(Status::Active));
}

#[test]
fn grace_expiry_is_dead_and_final() {
    let reg = registry();
    let t0 = Instant::now();
    let (id, _) = new_terminal(&reg, t0);
    let a = reg.activate(id, t0, RW, JOIN, None).unwrap();
    let timer = reg.disconnect(id, a.gen, t0).timer.unwrap();
    assert!(reg.expire(&timer, t0 + GRACE));
    assert_eq!(reg.check(id), Err(Missing::Dead(Some(Ending::GraceExpired))));
    assert_eq!(reg.get(id).unwrap().end_reason, Some(Ending::GraceExpired));
    assert_eq!(reg.get(id).unwrap().status, Status::Dead);
    assert!(reg.activate(id, t0 + GRACE, RW, JOIN, None).is_err());
    assert!(!reg.expire(&timer, t0 + GRACE), "expires once");
    assert_eq!(reg.counts(), StatusCounts { active: 0, disconnected: 0, detached: 0, dead: 1 });
}

#[tokio::test]
async fn a_takeover_stops_the_viewers_there_and_they_leave_quietly() {
    let reg = registry();
    let t0 = Instant::now();
    let (id, _) = new_terminal(&reg, t0);
    let first = reg.activate(id, t0, RW, JOIN, None).unwrap();
    let second = reg.activate(id, t0, RW, Joining::TakeOver, None).unwrap();
    assert_eq!(second.took_over, 1);
    assert_eq!(second.previous, Status::Active);
    assert_eq!(first.stop.stopped().await, StopReason::TakenOver);
    assert_eq!(reg.disconnect(id, first.gen, t0), Departure::default(), "it leaves quietly");
    assert_eq!(reg.check(id), Ok(Status::Active));
    assert!(reg.disconnect(id, second.gen, t0).timer.is_some());
}

#[test]
fn a_second_socket_joins_and_the_terminal_stays_active_until_the_last_leaves() {
    let reg = registry();
    let t0 = Instant::now();
    let (id, _) = new_terminal(&reg, t0);
    let first = reg.activate(id, t0, RW, JOIN, None).unwrap();
    let watcher = reg.activate(id, t0, Role::ReadOnly, JOIN, None).unwrap();
    assert_eq!((watcher.took_over, watcher.viewers, watcher.previous), (0, 2, Status::Active));
    // Sizes: only the read-write viewer's window counts.
    assert_eq!(reg.viewer_size(id, first.gen, 100, 30), Some((100, 30)));
    assert_eq!(reg.viewer_size(id, watcher.gen, 40, 10), None);
    let second = reg.activate(id, t0, RW, JOIN, None).unwrap();
    assert_eq!(reg.viewer_size(id, second.gen, 80, 40), Some((80, 30)));
    assert_eq!(*second.sizes.borrow(), Some((80, 30)), "announced to the viewers");
    // The smaller one leaves: the terminal grows back; still Active.
    let left = reg.disconnect(id, second.gen, t0);
    assert_eq!(left, Departure { timer: None, resize: Some((100, 30)) });
    assert_eq!(reg.disconnect(id, first.gen, t0), Departure::default());
    assert_eq!(reg.check(id), Ok(Status::Active), "the watcher is still there");
    assert!(reg.disconnect(id, watcher.gen, t0).timer.is_some(), "the last one leaves");
    assert_eq!(reg.check(id), Ok(Status::Disconnected));
}

#[tokio::test]
async fn delete_stops_the_socket() {
    let reg = registry();
    let t0 = Instant::now();
    let (id, _) = new_terminal(&reg, t0);
    let a = reg.activate(id, t0, RW, JOIN, None).unwrap();
    assert_eq!(
        reg.mark_dead(id, Ending::Deleted, Some(StopReason::Deleted), t0),
        Some(Status::Active)
    );
    assert_eq!(a.stop.stopped().await, StopReason::Deleted);
    let exited = Ending::Session(EndReason::Exited);
    assert_eq!(reg.mark_dead(id, exited, None, t0), None, "dead once, for the first reason");
    assert_eq!(reg.check(id), Err(Missing::Dead(Some(Ending::Deleted))));
    assert_eq!(reg.disconnect(id, a.gen, t0), Departure::default());
}

#[test]
fn dead_terminals_are_forgotten_oldest_first() {
    let reg = registry();
    let t0 = Instant::now();
    let ids: Vec<_> = (0..3).map(|_| new_terminal(&reg, t0).0).collect();
    for id in &ids {
        reg.mark_dead(*id, Ending::Session(EndReason::Exited), None, t0);
    }
    assert_eq!(reg.check(ids[0]), Err(Missing::NotFound));
    assert_eq!(reg.check(ids[2]), Err(Missing::Dead(Some(Ending::Session(EndReason::Exited)))));
}

#[test]
fn reconcile_recovers_buries_and_kills_again() {
    let reg = registry();
    let t0 = Instant::now();
    let (known, _) = new_terminal(&reg, t0);
    let (vanished, _) = new_terminal(&reg, t0);
    let (dead_but_running, _) = new_terminal(&reg, t0);
    reg.mark_dead(dead_but_running, Ending::Session(EndReason::Killed), None, t0);
    let orphan = SessionId::new();
    let foreign = SessionId::new();
    let exited = SessionId::new();
    let list = vec![
        session(known, SessionState::Running, true),
        session(dead_but_running, SessionState::Running, true),
        session(orphan, SessionState::Running, true),
        session(foreign, SessionState::Running, false),
        session(exited, SessionState::Exited, true),
    ];
    let r = reg.reconcile(&list, t0);
    assert_eq!(r.recovered, vec![GraceTimer { id: orphan, epoch: 0, after: GRACE }]);
    assert_eq!(r.dead, vec![(vanished, Status::Disconnected)]);
    assert_eq!(reg.get(vanished).unwrap().end_reason, Some(Ending::Lost));
    assert_eq!(r.kill_again, vec![dead_but_running]);
    assert_eq!(reg.check(orphan), Ok(Status::Disconnected));
    assert_eq!(reg.check(foreign), Err(Missing::NotFound));
    assert_eq!(reg.check(exited), Err(Missing::NotFound));
    let info = reg.get(orphan).unwrap();
    assert_eq!((info.pid, info.created_at_ms, info.last_activity_ms), (7, 5, 6));
    // A recovered terminal was connected before: its return counts as a reconnect.
    let a = reg.activate(orphan, t0 + Duration::from_secs(2), RW, JOIN, None).unwrap();
    assert_eq!(a.reconnected_after, Some(Duration::from_secs(2)));
}

#[tokio::test]
async fn a_detached_terminal_keeps_no_socket_and_no_grace_and_reopens() {
    let reg = registry();
    let t0 = Instant::now();
    let (id, _) = new_terminal(&reg, t0);
    let a = reg.activate(id, t0, RW, JOIN, None).unwrap();
    assert_eq!(reg.detach(id, t0), Ok(Status::Active));
    assert_eq!(a.stop.stopped().await, StopReason::Detached);
    // Its socket leaves without starting a grace.
    assert_eq!(reg.disconnect(id, a.gen, t0), Departure::default());
    assert_eq!(reg.check(id), Ok(Status::Detached));
    assert_eq!(reg.detach(id, t0), Ok(Status::Detached), "detaching twice is harmless");
    assert_eq!(reg.counts().detached, 1);
    // A socket reopens it; when that one drops, the usual grace applies.
    let b = reg.activate(id, t0, RW, JOIN, None).unwrap();
    assert_eq!(b.previous, Status::Detached);
    assert!(reg.disconnect(id, b.gen, t0).timer.is_some());
    // Detaching a Disconnected terminal makes its pending grace timer moot.
    let timer = reg.disconnect(id, b.gen, t0);
    assert_eq!(timer, Departure::default());
    let c = reg.activate(id, t0, RW, JOIN, None).unwrap();
    let timer = reg.disconnect(id, c.gen, t0).timer.unwrap();
    reg.detach(id, t0).unwrap();
    assert!(!reg.expire(&timer, t0 + Duration::from_secs(60)), "the grace no longer applies");
    assert_eq!(reg.check(id), Ok(Status::Detached));
    // Dead stays dead.
    reg.mark_dead(id, Ending::Deleted, None, t0);
    assert_eq!(reg.detach(id, t0), Err(Missing::Dead(Some(Ending::Deleted))));
}
