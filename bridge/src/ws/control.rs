//! The control side of one socket: inbound frames (input, resize, ping, malformed or
//! oversized messages), the heartbeat with its pong deadline, and the idle deadline.
//!
//! It never waits on the terminal: input goes to the input pump through a bounded queue,
//! and when that queue is full the next frame is held (and the socket not read) until there
//! is room, while the timers keep running.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use flume::TrySendError;
use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::protocol::{parse_client, ClientMessage, ServerMessage};
use super::session::{secs, text, InputCmd, LastData, Limits, Outcome, RecvError, WsMessage};
use crate::metrics::Metrics;
use crate::terminals::StopSignal;

/// A frame's consequence that waits for room in its queue.
enum Pending {
    Input(InputCmd),
    Reply(WsMessage),
}

/// A send into a full queue, under way.
type PendingSend = Pin<Box<dyn Future<Output = Result<(), &'static str>> + Send>>;

/// What handling one inbound frame leads to.
enum Step {
    Continue,
    Pend(Pending),
    Done(Outcome),
}

/// Inbound frames, heartbeat and deadlines.
pub(super) struct Control<'a> {
    ctrl_tx: &'a flume::Sender<WsMessage>,
    in_tx: flume::Sender<InputCmd>,
    limits: &'a Limits,
    last: &'a LastData,
    metrics: &'a Metrics,
    /// The frame number of the Ping awaiting its Pong.
    outstanding: Option<u64>,
    /// The client's last acknowledged offset, for the output pump's flow control.
    acked: watch::Sender<Option<u64>>,
}

impl<'a> Control<'a> {
    /// A control loop feeding `in_tx` and answering through `ctrl_tx`.
    pub(super) fn new(
        ctrl_tx: &'a flume::Sender<WsMessage>,
        in_tx: flume::Sender<InputCmd>,
        limits: &'a Limits,
        last: &'a LastData,
        metrics: &'a Metrics,
        acked: watch::Sender<Option<u64>>,
    ) -> Control<'a> {
        Control { ctrl_tx, in_tx, limits, last, metrics, outstanding: None, acked }
    }

    /// Runs until the socket must end; returns why.
    pub(super) async fn run<St>(
        &mut self,
        stream: &mut St,
        stop: &StopSignal,
        shutdown: &CancellationToken,
    ) -> Outcome
    where
        St: Stream<Item = Result<WsMessage, RecvError>> + Unpin,
    {
        let limits = self.limits.clone();
        let mut heartbeat = tokio::time::interval_at(
            Instant::now() + limits.heartbeat_interval,
            limits.heartbeat_interval,
        );
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let pong_deadline = tokio::time::sleep(limits.pong_timeout);
        let idle_deadline = tokio::time::sleep_until(self.last.at() + limits.idle_timeout);
        tokio::pin!(pong_deadline, idle_deadline);
        let mut frame = 0u64;
        // A frame's consequence waiting for room in its queue; the socket is not read
        // meanwhile. Kept across turns of the loop: dropping it would lose the message.
        let mut pending: Option<PendingSend> = None;
        loop {
            tokio::select! {
                biased;
                reason = stop.stopped() => return Outcome::Stopped(reason),
                _ = shutdown.cancelled() => return Outcome::Shutdown,
                _ = &mut pong_deadline, if self.outstanding.is_some() => {
                    tracing::warn!("Pong timeout after {} seconds", secs(limits.pong_timeout));
                    tracing::error!("Heartbeat failure detected, closing connection");
                    self.metrics.heartbeat_timeout();
                    return Outcome::PongTimeout;
                }
                _ = &mut idle_deadline => {
                    let due = self.last.at() + limits.idle_timeout;
                    if Instant::now() >= due {
                        tracing::debug!("No data received for {} seconds", secs(limits.idle_timeout));
                        tracing::info!("Idle timeout reached, closing WebSocket");
                        self.metrics.idle_close();
                        return Outcome::IdleTimeout;
                    }
                    idle_deadline.as_mut().reset(due);
                }
                _ = heartbeat.tick(), if self.outstanding.is_none() => {
                    frame += 1;
                    tracing::trace!("Sending heartbeat ping (frame {frame})");
                    let ping = WsMessage::Ping(Bytes::from(frame.to_string()));
                    // A full queue means the socket is far behind: the deadline decides.
                    if let Err(TrySendError::Disconnected(_)) = self.ctrl_tx.try_send(ping) {
                        return Outcome::Broken("the socket writer stopped".into());
                    }
                    self.outstanding = Some(frame);
                    pong_deadline.as_mut().reset(Instant::now() + limits.pong_timeout);
                }
                sent = async { pending.as_mut().expect("guarded").await }, if pending.is_some() => {
                    pending = None;
                    if let Err(why) = sent {
                        return Outcome::Broken(why.into());
                    }
                }
                item = stream.next(), if pending.is_none() => match self.on_item(item) {
                    Step::Continue => {}
                    Step::Pend(Pending::Input(cmd)) => {
                        let send = self.in_tx.clone().into_send_async(cmd);
                        pending = Some(Box::pin(async move {
                            send.await.map_err(|_| "the input queue closed")
                        }));
                    }
                    Step::Pend(Pending::Reply(msg)) => {
                        let send = self.ctrl_tx.clone().into_send_async(msg);
                        pending = Some(Box::pin(async move {
                            send.await.map_err(|_| "the socket writer stopped")
                        }));
                    }
                    Step::Done(outcome) => return outcome,
                },
            }
        }
    }

    fn on_item(&mut self, item: Option<Result<WsMessage, RecvError>>) -> Step {
        let max = self.limits.max_message_bytes;
        let msg = match item {
            None => {
                return Step::Done(Outcome::Broken(
                    "connection closed without a close frame".into(),
                ))
            }
            Some(Err(RecvError::TooLarge { size, max })) => return self.too_large(size, max),
            Some(Err(RecvError::Violation { code, why })) => {
                tracing::warn!("WebSocket protocol violation ({code}): {why}");
                return Step::Done(Outcome::Violation { code, why });
            }
            Some(Err(RecvError::Transport(e))) => return Step::Done(Outcome::Broken(e)),
            Some(Ok(msg)) => msg,
        };
        match msg {
            WsMessage::Binary(data) if data.len() > max => self.too_large(Some(data.len()), max),
            WsMessage::Text(t) if t.len() > max => self.too_large(Some(t.len()), max),
            WsMessage::Binary(data) => {
                self.last.touch();
                self.metrics.bytes_in(data.len());
                self.deliver(Pending::Input(InputCmd::Data(data)))
            }
            WsMessage::Text(t) => {
                self.last.touch();
                match parse_client(&t) {
                    Ok(ClientMessage::Resize { cols, rows }) => {
                        self.deliver(Pending::Input(InputCmd::Resize(cols, rows)))
                    }
                    Ok(ClientMessage::Ping {}) => {
                        self.deliver(Pending::Reply(text(&ServerMessage::Pong {})))
                    }
                    Ok(ClientMessage::Ack { offset }) => {
                        // Acks only move forward; a stale one must not pause the output.
                        self.acked.send_modify(|a| *a = Some(a.map_or(offset, |a| a.max(offset))));
                        Step::Continue
                    }
                    Err(e) => {
                        tracing::debug!("refused a control message: {e}");
                        self.deliver(Pending::Reply(text(&e.reply())))
                    }
                }
            }
            // The transport answers Pings by itself.
            WsMessage::Ping(_) => Step::Continue,
            WsMessage::Pong(payload) => {
                let n = std::str::from_utf8(&payload).ok().and_then(|s| s.parse::<u64>().ok());
                if n.is_some() && n == self.outstanding {
                    tracing::trace!("Received pong response (frame {})", n.unwrap_or_default());
                    self.outstanding = None;
                }
                Step::Continue
            }
            WsMessage::Close(_) => Step::Done(Outcome::ClientClosed),
        }
    }

    fn too_large(&self, size: Option<usize>, max: usize) -> Step {
        match size {
            Some(size) => tracing::warn!("Message of {size} bytes exceeds the {max}-byte limit"),
            None => tracing::warn!("Message exceeds the {max}-byte limit"),
        }
        Step::Done(Outcome::TooLarge { size, max })
    }

    /// Queues at once when there is room; otherwise holds it (and stops reading) until
    /// there is.
    fn deliver(&self, p: Pending) -> Step {
        match p {
            Pending::Input(cmd) => match self.in_tx.try_send(cmd) {
                Ok(()) => Step::Continue,
                Err(TrySendError::Full(cmd)) => Step::Pend(Pending::Input(cmd)),
                Err(TrySendError::Disconnected(_)) => {
                    Step::Done(Outcome::Broken("the input queue closed".into()))
                }
            },
            Pending::Reply(msg) => match self.ctrl_tx.try_send(msg) {
                Ok(()) => Step::Continue,
                Err(TrySendError::Full(msg)) => Step::Pend(Pending::Reply(msg)),
                Err(TrySendError::Disconnected(_)) => {
                    Step::Done(Outcome::Broken("the socket writer stopped".into()))
                }
            },
        }
    }
}
