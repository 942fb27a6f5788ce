//! Share links: a credential for one terminal, to watch it read-only. A share token, sent
//! as `Authorization: Share <token>`, may only read that terminal's entry and mint
//! read-only tickets for it; revoking the terminal's shares closes the sockets opened
//! through them and refuses the tokens from then on.

use std::collections::HashMap;
use std::sync::Mutex;

use ipc_proto::SessionId;

use super::token::random_hex;

/// Share tokens outstanding at most.
pub const MAX_SHARES: usize = 4096;

/// The share tokens, each for one terminal.
#[derive(Debug, Default)]
pub struct Shares {
    by_token: Mutex<HashMap<String, SessionId>>,
}

/// Too many share links exist.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0} share links exist; revoke some first")]
pub struct TooManyShares(pub usize);

impl Shares {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionId>> {
        self.by_token.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new share token for `terminal`.
    pub fn mint(&self, terminal: SessionId) -> Result<String, TooManyShares> {
        let mut map = self.map();
        if map.len() >= MAX_SHARES {
            return Err(TooManyShares(map.len()));
        }
        let token = random_hex();
        map.insert(token.clone(), terminal);
        Ok(token)
    }

    /// The terminal `token` shares, if it is a live share token (compared in constant time).
    pub fn terminal(&self, token: &str) -> Option<SessionId> {
        let map = self.map();
        let mut found = None;
        for (t, id) in map.iter() {
            if bool::from(subtle::ConstantTimeEq::ct_eq(t.as_bytes(), token.as_bytes())) {
                found = Some(*id);
            }
        }
        found
    }

    /// Revokes every share of `terminal`; returns the tokens revoked.
    pub fn revoke(&self, terminal: SessionId) -> Vec<String> {
        let mut map = self.map();
        let gone: Vec<String> =
            map.iter().filter(|(_, id)| **id == terminal).map(|(t, _)| t.clone()).collect();
        for t in &gone {
            map.remove(t);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_names_its_terminal_until_revoked() {
        let shares = Shares::default();
        let (a, b) = (SessionId::new(), SessionId::new());
        let ta = shares.mint(a).unwrap();
        let tb = shares.mint(b).unwrap();
        assert_eq!(shares.terminal(&ta), Some(a));
        assert_eq!(shares.terminal("made-up"), None);
        assert_eq!(shares.revoke(a), vec![ta.clone()]);
        assert_eq!(shares.terminal(&ta), None);
        assert_eq!(shares.terminal(&tb), Some(b), "another terminal's share stays");
    }
}
