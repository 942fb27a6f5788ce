//! `kill`: end a session, or deliver one signal to its process group.

use std::str::FromStr;

use ipc_proto::{DaemonMessage, KillRequest};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::{session, ReplyError};
use crate::connection::Connection;
use crate::session::EndReason;

pub async fn handle(conn: &mut Connection, id: u64, req: KillRequest) -> Result<(), ReplyError> {
    let session = session(conn, req.session)?;
    match req.signal.as_deref() {
        None => session.request_end(EndReason::Killed),
        Some(name) => {
            let signal = parse_signal(name)?;
            if session.exit_status().is_none() {
                tracing::info!(session_id = %session.id, %signal, "delivering signal to process group");
                let _ = killpg(Pid::from_raw(session.pid as i32), signal);
            }
        }
    }
    conn.reply(id, DaemonMessage::Ok).await;
    Ok(())
}

/// Accepts `INT`, `SIGINT`, `sigint` and `2`.
pub fn parse_signal(name: &str) -> Result<Signal, ReplyError> {
    let bad = || ReplyError::bad(format!("unknown signal '{name}'"));
    if let Ok(n) = name.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    Signal::from_str(&full).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_and_numbers() {
        assert_eq!(parse_signal("INT").unwrap(), Signal::SIGINT);
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("999").is_err());
    }
}
