//! The interactive commands, `attach` and `exec`, and the streaming loop they share.
//!
//! Requests that wait for a reply (input, resize, kill) run in tasks of their own: the
//! client delivers replies and output in wire order, so a reply can only arrive once the
//! output ahead of it has been consumed by the loop.

use std::io;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use bytes::Bytes;
use ipc_proto::{
    AttachMode, Client, ClientError, ExitStatus, Follower, Links, ScreenStart, SessionEvent,
    SessionId, SpawnRequest,
};
use nix::libc;
use tokio::signal::unix::Signal;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::plain::Render;
use crate::stdio;
use crate::term::{self, RawMode, Signals};

/// `attach`: returns the session's shell code when it exits, 0 after a detach.
pub async fn attach(
    client: Client,
    socket: std::path::PathBuf,
    session: SessionId,
    since: Option<u64>,
    detach_key: Option<u8>,
) -> Result<i32> {
    let tty = term::stdin_is_tty();
    let mut signals = Signals::install().context("cannot handle signals")?;
    let changes = if tty { Some(term::window_changes()?) } else { None };
    // A terminal is painted from the session's screen (sized to it first), unless `since`
    // is still in the replay window; piped output gets the bytes.
    let screen = if tty {
        resize_to_terminal(&client, session).await;
        ScreenStart::Auto
    } else {
        ScreenStart::Never
    };
    let att = client.attach_from(session, since, true, screen).await?;
    // Goes on across ptyd's live upgrades: re-attached from the next byte.
    let mut att = Follower::new(socket, att, true);
    if att.reply().dropped > 0 && att.snapshot().is_none() {
        eprintln!("[ptyctl: {} bytes dropped]", att.reply().dropped);
    }
    let raw = if tty {
        Some(RawMode::enable().context("cannot put the terminal in raw mode")?)
    } else {
        None
    };
    if let Some(snapshot) = att.snapshot() {
        stdio::write_stdout(snapshot.clone()).await.context("painting the screen")??;
    }
    if let Some(changes) = changes {
        follow_window_size(att.links(), session, changes, false);
    }
    // Only a terminal gets a detach key: piped input is data and must reach the session intact.
    let key = if tty { detach_key } else { None };
    let controls = forward_stdin(att.links(), session, key);
    let ending = pump(&mut att, &mut signals, controls, tty, false, Render::Raw).await;
    // Dropping the attachment detaches; leaving the process closes the connection anyway.
    drop(att);
    drop(raw);
    match ending? {
        Ending::Exited(status) => {
            eprintln!("[session exited: {status}]");
            Ok(status.shell_code())
        }
        Ending::Detached => {
            eprint!("\r\n[detached from {session}]\r\n");
            Ok(0)
        }
        Ending::Signalled(signo) => {
            eprint!("\r\n[detached from {session}]\r\n");
            Ok(128 + signo)
        }
    }
}

/// `exec`: returns the command's shell code. The session belongs to this invocation: when
/// ptyctl stops early (signal, broken stdout, lost connection, `timeout`) it ends the
/// session too. With `follow_size`, the session's size tracks the terminal on stdin.
pub async fn exec(
    client: Client,
    socket: std::path::PathBuf,
    req: SpawnRequest,
    follow_size: bool,
    timeout: Option<Duration>,
    render: Render,
) -> Result<i32> {
    let tty = term::stdin_is_tty();
    let mut signals = Signals::install().context("cannot handle signals")?;
    let changes = if follow_size { Some(term::window_changes()?) } else { None };
    let raw = if tty {
        Some(RawMode::enable().context("cannot put the terminal in raw mode")?)
    } else {
        None
    };
    // Like an ssh command: if ptyctl dies, even by SIGKILL, the daemon ends the session.
    let req = SpawnRequest { close_with_connection: true, ..req };
    let (spawned, att) = client.spawn_attached(req, AttachMode { lossless: true }).await?;
    let mut att = Follower::new(socket, att, true);
    let session = spawned.session;
    if let Some(changes) = changes {
        // Resize once more: the terminal may have changed since the request's size was read.
        follow_window_size(att.links(), session, changes, true);
    }
    // Without a terminal, stdin is left alone (like `ssh host cmd` with a pipe it never reads).
    let controls = if tty { forward_stdin(att.links(), session, None) } else { mpsc::channel(1).1 };
    let pumped = pump(&mut att, &mut signals, controls, tty, true, render);
    // `None` when the timeout expired. Counted from the spawn, like the daemon's exec.
    let ending = match timeout {
        Some(t) => tokio::time::timeout(t, pumped).await.ok(),
        None => Some(pumped.await),
    };
    let client = att.client();
    drop(att);
    let code = match ending {
        Some(Ok(Ending::Exited(status))) => Ok(status.shell_code()),
        Some(Ok(Ending::Detached)) => Ok(0),
        Some(Ok(Ending::Signalled(signo))) => {
            end_session(&client, session).await;
            Ok(128 + signo)
        }
        Some(Err(e)) => {
            end_session(&client, session).await;
            Err(e)
        }
        None => {
            end_session(&client, session).await;
            let t = timeout.unwrap_or_default();
            notice(tty, &format!("[ptyctl: timed out after {}]", humantime::format_duration(t)));
            Ok(crate::EXIT_TIMEOUT)
        }
    };
    drop(raw);
    code
}

enum Ending {
    Exited(ExitStatus),
    Detached,
    /// A signal (SIGTERM, SIGHUP, or SIGINT when not forwarded) asked ptyctl to stop.
    Signalled(i32),
}

enum Control {
    Detach,
    InputFailed(String),
}

/// Streams the attachment's output to stdout until the session exits, the user detaches
/// or a signal stops ptyctl.
async fn pump(
    att: &mut Follower,
    signals: &mut Signals,
    mut controls: mpsc::Receiver<Control>,
    raw: bool,
    forward_interrupt: bool,
    mut render: Render,
) -> Result<Ending> {
    let session = att.session();
    // At most one write in flight, and no event taken while it is: a slow stdout slows the
    // session down (the attachment is lossless) yet signals are still handled meanwhile.
    let mut writing: Option<JoinHandle<io::Result<()>>> = None;
    loop {
        tokio::select! {
            event = att.next(), if writing.is_none() => match event {
                Some(SessionEvent::Output { data, .. }) => {
                    let data = match render.render(&data) {
                        std::borrow::Cow::Borrowed(_) => data,
                        std::borrow::Cow::Owned(text) => text.into(),
                    };
                    writing = Some(stdio::write_stdout(data));
                }
                Some(SessionEvent::Dropped { bytes, .. }) => {
                    notice(raw, &format!("[ptyctl: {bytes} bytes dropped]"));
                }
                Some(SessionEvent::Exit(status)) => return Ok(Ending::Exited(status)),
                None => return Err(connection_lost(&att.client()).await),
            },
            written = finished(&mut writing) => {
                writing = None;
                written.context("cannot write to stdout")?;
            }
            Some(control) = controls.recv() => match control {
                Control::Detach => return Ok(Ending::Detached),
                Control::InputFailed(why) => notice(raw, &format!("[ptyctl: input not sent: {why}]")),
            },
            signo = signals.recv() => {
                if signo == libc::SIGINT && forward_interrupt {
                    let client = att.client();
                    tokio::spawn(async move { client.kill(session, Some("INT")).await });
                } else {
                    return Ok(Ending::Signalled(signo));
                }
            }
        }
    }
}

/// The outcome of the write in flight; pending for ever when there is none.
async fn finished(writing: &mut Option<JoinHandle<io::Result<()>>>) -> io::Result<()> {
    match writing {
        Some(handle) => handle.await.unwrap_or_else(|e| Err(io::Error::other(e))),
        None => std::future::pending().await,
    }
}

/// A line on stderr that does not garble the screen when the terminal is raw.
fn notice(raw: bool, msg: &str) {
    if raw {
        eprint!("\r\n{msg}\r\n");
    } else {
        eprintln!("{msg}");
    }
}

/// The reason the connection ended, asked of the client (its calls fail with it once closed).
async fn connection_lost(client: &Client) -> anyhow::Error {
    match client.list().await {
        Err(ClientError::Ipc(why)) => anyhow!("lost the connection to ptyd: {why}"),
        Err(e) => anyhow!("lost the session's output: {e}"),
        Ok(_) => anyhow!("ptyd stopped sending the session's output"),
    }
}

/// Best effort: ends a session this invocation started, without waiting long.
async fn end_session(client: &Client, session: SessionId) {
    let _ = tokio::time::timeout(Duration::from_secs(2), client.kill(session, None)).await;
}

/// Resizes the session to the local terminal (now, if `initial`) and on every SIGWINCH.
fn follow_window_size(links: Links, session: SessionId, mut changes: Signal, initial: bool) {
    tokio::spawn(async move {
        let resize = async |links: &Links| {
            if let Some(size) = term::stdin_size() {
                // A failure means the session is gone; the output stream reports that.
                let _ = links
                    .call(|c| async move { c.resize(session, size.cols, size.rows).await })
                    .await;
            }
        };
        if initial {
            resize(&links).await;
        }
        while changes.recv().await.is_some() {
            resize(&links).await;
        }
    });
}

async fn resize_to_terminal(client: &Client, session: SessionId) {
    if let Some(size) = term::stdin_size() {
        // A failure means the session is gone; the output stream reports that.
        let _ = client.resize(session, size.cols, size.rows).await;
    }
}

/// Sends stdin to the session until end of file or `detach_key`, which is not sent.
fn forward_stdin(
    links: Links,
    session: SessionId,
    detach_key: Option<u8>,
) -> mpsc::Receiver<Control> {
    let (tx, rx) = mpsc::channel(1);
    let mut chunks = stdio::stdin_chunks();
    tokio::spawn(async move {
        while let Some(chunk) = chunks.recv().await {
            let mut chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    let _ = tx.send(Control::InputFailed(format!("cannot read stdin: {e}"))).await;
                    return;
                }
            };
            let at = detach_key.and_then(|key| chunk.iter().position(|&b| b == key));
            let data: Bytes = match at {
                Some(at) => chunk.split_to(at),
                None => chunk,
            };
            if !data.is_empty() {
                let sent = links
                    .call(|c| {
                        let data = data.clone();
                        async move { c.input(session, data).await }
                    })
                    .await;
                if let Err(e) = sent {
                    let _ = tx.send(Control::InputFailed(e.to_string())).await;
                    return;
                }
            }
            if at.is_some() {
                let _ = tx.send(Control::Detach).await;
                return;
            }
        }
    });
    rx
}
