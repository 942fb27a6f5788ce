//! WebSocket tickets: short-lived, single-use secrets minted by an authenticated request
//! for one terminal, so that opening a socket never puts the long-lived token in a URL
//! (where proxies and browser history would keep it).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use ipc_proto::SessionId;
use tokio::time::Instant;

use super::token::random_hex;
use crate::viewers::Role;

/// What a redeemed ticket grants the socket it opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The most the socket may do: `ReadOnly` for a ticket minted through a share link.
    pub role: Role,
    /// The share token it came through, if any (revoking it closes the socket).
    pub share: Option<String>,
}

/// Tickets outstanding at most; past this, minting fails until some are used or expire.
pub const MAX_OUTSTANDING: usize = 16 * 1024;

/// The outstanding tickets.
#[derive(Debug)]
pub struct Tickets {
    ttl: Duration,
    issued: Mutex<HashMap<String, (SessionId, Instant, Grant)>>,
}

/// Too many tickets are outstanding.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0} WebSocket tickets are outstanding; use or let some expire first")]
pub struct TooManyTickets(pub usize);

impl Tickets {
    /// Tickets that expire `ttl` after they are minted.
    pub fn new(ttl: Duration) -> Tickets {
        Tickets { ttl, issued: Mutex::default() }
    }

    /// How long a ticket lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new ticket for `terminal`, valid once until `now + ttl`, granting read-write.
    pub fn mint(&self, terminal: SessionId, now: Instant) -> Result<String, TooManyTickets> {
        self.mint_granting(terminal, now, Grant { role: Role::ReadWrite, share: None })
    }

    /// A new ticket for `terminal` that grants `grant`.
    pub fn mint_granting(
        &self,
        terminal: SessionId,
        now: Instant,
        grant: Grant,
    ) -> Result<String, TooManyTickets> {
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        if issued.len() >= MAX_OUTSTANDING {
            issued.retain(|_, (_, expires, _)| *expires > now);
            if issued.len() >= MAX_OUTSTANDING {
                return Err(TooManyTickets(issued.len()));
            }
        }
        let ticket = random_hex();
        issued.insert(ticket.clone(), (terminal, now + self.ttl, grant));
        Ok(ticket)
    }

    /// Uses `ticket` up: true when it was issued for `terminal` and has not expired. A
    /// ticket presented for another terminal is used up too, so it cannot be tried twice.
    pub fn redeem(&self, ticket: &str, terminal: SessionId, now: Instant) -> Option<Grant> {
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        match issued.remove(ticket) {
            Some((id, expires, grant)) if id == terminal && expires > now => Some(grant),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_works_once_for_its_terminal_before_it_expires() {
        let t = Tickets::new(Duration::from_secs(30));
        let (a, b) = (SessionId::new(), SessionId::new());
        let now = Instant::now();
        let ticket = t.mint(a, now).unwrap();
        assert!(t.redeem(&ticket, a, now).is_some());
        assert!(t.redeem(&ticket, a, now).is_none(), "single use");
        let other = t.mint(a, now).unwrap();
        assert!(t.redeem(&other, b, now).is_none(), "scoped to its terminal");
        assert!(t.redeem(&other, a, now).is_none(), "a wrong try uses it up");
        let late = t.mint(a, now).unwrap();
        assert!(t.redeem(&late, a, now + Duration::from_secs(31)).is_none(), "expired");
        assert!(t.redeem("made-up", a, now).is_none());
        let shared = Grant { role: Role::ReadOnly, share: Some("s".into()) };
        let ro = t.mint_granting(a, now, shared.clone()).unwrap();
        assert_eq!(t.redeem(&ro, a, now), Some(shared), "it grants what it was minted with");
    }
}
