//! WebSocket tickets: short-lived, single-use secrets minted by an authenticated request
//! for one terminal, so that opening a socket never puts the long-lived token in a URL
//! (where proxies and browser history would keep it).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use ipc_proto::SessionId;
use tokio::time::Instant;

use super::token::random_hex;

/// Tickets outstanding at most; past this, minting fails until some are used or expire.
pub const MAX_OUTSTANDING: usize = 16 * 1024;

/// The outstanding tickets.
#[derive(Debug)]
pub struct Tickets {
    ttl: Duration,
    issued: Mutex<HashMap<String, (SessionId, Instant)>>,
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

    /// A new ticket for `terminal`, valid once until `now + ttl`.
    pub fn mint(&self, terminal: SessionId, now: Instant) -> Result<String, TooManyTickets> {
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        if issued.len() >= MAX_OUTSTANDING {
            issued.retain(|_, (_, expires)| *expires > now);
            if issued.len() >= MAX_OUTSTANDING {
                return Err(TooManyTickets(issued.len()));
            }
        }
        let ticket = random_hex();
        issued.insert(ticket.clone(), (terminal, now + self.ttl));
        Ok(ticket)
    }

    /// Uses `ticket` up: true when it was issued for `terminal` and has not expired. A
    /// ticket presented for another terminal is used up too, so it cannot be tried twice.
    pub fn redeem(&self, ticket: &str, terminal: SessionId, now: Instant) -> bool {
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        matches!(issued.remove(ticket), Some((id, expires)) if id == terminal && expires > now)
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
        assert!(t.redeem(&ticket, a, now));
        assert!(!t.redeem(&ticket, a, now), "single use");
        let other = t.mint(a, now).unwrap();
        assert!(!t.redeem(&other, b, now), "scoped to its terminal");
        assert!(!t.redeem(&other, a, now), "a wrong try uses it up");
        let late = t.mint(a, now).unwrap();
        assert!(!t.redeem(&late, a, now + Duration::from_secs(31)), "expired");
        assert!(!t.redeem("made-up", a, now));
    }
}
