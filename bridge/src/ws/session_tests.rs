//! Unit tests of the socket loop, driven through channels; timing tests run on tokio's
//! paused clock, so a 30 s heartbeat takes no real time.

use std::sync::Arc;

use futures::channel::mpsc as fmpsc;
use ipc_proto::{EndReason, SessionId};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::*;

struct FakeOutput(mpsc::Receiver<SessionEvent>);

impl OutputSource for FakeOutput {
    async fn next_event(&mut self) -> Option<SessionEvent> {
        self.0.recv().await
    }
    async fn end_reason(&mut self) -> String {
        "ptyd closed the connection".into()
    }
    async fn exit_reason(&mut self) -> Option<EndReason> {
        Some(EndReason::IdleTimeout)
    }
}

struct FakeInput(mpsc::UnboundedSender<String>);

impl InputTarget for FakeInput {
    async fn input(&self, data: Bytes) -> Result<(), ClientError> {
        let _ = self.0.send(format!("input:{}", String::from_utf8_lossy(&data)));
        Ok(())
    }
    async fn resize(&self, cols: u16, rows: u16) -> Result<(), ClientError> {
        let _ = self.0.send(format!("resize:{cols}x{rows}"));
        Ok(())
    }
}

fn limits() -> Limits {
    Limits {
        heartbeat_interval: Duration::from_secs(30),
        pong_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(300),
        max_message_bytes: 64,
        grace: Duration::from_secs(10),
        flow_high: 16,
        flow_low: 4,
        close_timeout: Duration::from_secs(1),
    }
}

/// The test's side of one socket loop.
struct Harness {
    /// What the loop sent to the "browser".
    sent: fmpsc::UnboundedReceiver<WsMessage>,
    /// What the "browser" sends.
    browser: fmpsc::UnboundedSender<Result<WsMessage, RecvError>>,
    /// Terminal output to feed.
    output: mpsc::Sender<SessionEvent>,
    /// What reached the terminal's input.
    inputs: mpsc::UnboundedReceiver<String>,
    stop: StopSignal,
    shutdown: CancellationToken,
    task: JoinHandle<Outcome>,
}

fn start_with(limits: Limits, start: AttachReply) -> Harness {
    let (sink, sent) = fmpsc::unbounded();
    let (browser, stream) = fmpsc::unbounded();
    let (output, out_rx) = mpsc::channel(8);
    let (in_tx, inputs) = mpsc::unbounded_channel();
    let stop = StopSignal::new();
    let shutdown = CancellationToken::new();
    let session = Session {
        start,
        snapshot: None,
        output: FakeOutput(out_rx),
        input: FakeInput(in_tx),
        limits,
        stop: stop.clone(),
        shutdown: shutdown.clone(),
        activity: Arc::new(AtomicU64::new(0)),
        metrics: Metrics::new(),
        role: crate::viewers::Role::ReadWrite,
        sizes: tokio::sync::watch::channel(None).1,
    };
    let task = tokio::spawn(run(sink, stream, session));
    Harness { sent, browser, output, inputs, stop, shutdown, task }
}

fn start(limits: Limits) -> Harness {
    let reply = AttachReply::bytes(SessionId::new(), 0, 0, 0);
    start_with(limits, reply)
}

impl Harness {
    async fn next(&mut self) -> WsMessage {
        self.sent.next().await.expect("the loop ended its output")
    }

    async fn next_json(&mut self) -> serde_json::Value {
        match self.next().await {
            WsMessage::Text(t) => serde_json::from_str(&t).unwrap(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next frame that is not a heartbeat Ping.
    async fn next_non_ping(&mut self) -> WsMessage {
        loop {
            match self.next().await {
                WsMessage::Ping(_) => {}
                other => return other,
            }
        }
    }

    fn send(&self, msg: WsMessage) {
        self.browser.unbounded_send(Ok(msg)).unwrap();
    }

    async fn close(&mut self) -> CloseFrame {
        match self.next_non_ping().await {
            WsMessage::Close(Some(frame)) => frame,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn hello_output_input_resize_ping_and_exit() {
    let mut h = start(limits());
    let hello = h.next_json().await;
    assert_eq!(hello["type"], "hello");
    assert_eq!((hello["offset"].as_u64(), hello["dropped"].as_u64()), (Some(0), Some(0)));

    h.output
        .send(SessionEvent::Output { offset: 0, data: Bytes::from_static(b"$ ") })
        .await
        .unwrap();
    assert_eq!(h.next().await, WsMessage::Binary(Bytes::from_static(b"$ ")));

    h.send(WsMessage::Binary(Bytes::from_static(b"ls\r")));
    assert_eq!(h.inputs.recv().await.unwrap(), "input:ls\r");
    h.send(WsMessage::Text(r#"{"type":"resize","cols":100,"rows":30}"#.into()));
    assert_eq!(h.inputs.recv().await.unwrap(), "resize:100x30");
    h.send(WsMessage::Text(r#"{"type":"ping"}"#.into()));
    assert_eq!(h.next_json().await["type"], "pong");

    let status = ExitStatus { code: Some(3), signal: None };
    h.output.send(SessionEvent::Exit(status)).await.unwrap();
    let exit = h.next_json().await;
    assert_eq!((exit["type"].as_str(), exit["code"].as_i64()), (Some("exit"), Some(3)));
    assert_eq!(exit["end_reason"], "idle_timeout", "why the session ended: {exit}");
    let frame = h.close().await;
    assert_eq!(frame.code, close::NORMAL);
    assert_eq!(frame.reason, "process exited with code 3");
    assert_eq!(h.task.await.unwrap(), Outcome::Exited(status, Some(EndReason::IdleTimeout)));
}

#[tokio::test(start_paused = true)]
async fn malformed_control_messages_get_an_error_and_the_socket_stays() {
    let mut h = start(limits());
    h.next_json().await;
    for bad in
        ["not json", r#"{"type":"launch","cmd":"rm"}"#, r#"{"type":"resize","cols":0,"rows":1}"#]
    {
        h.send(WsMessage::Text(bad.into()));
        let reply = h.next_json().await;
        assert_eq!(reply["type"], "error", "{bad}");
        assert!(reply["code"] == "BadMessage" || reply["code"] == "UnknownMessage", "{reply}");
    }
    h.send(WsMessage::Binary(Bytes::from_static(b"still here")));
    assert_eq!(h.inputs.recv().await.unwrap(), "input:still here");
    h.send(WsMessage::Close(None));
    assert_eq!(h.task.await.unwrap(), Outcome::ClientClosed);
}

#[tokio::test(start_paused = true)]
async fn answered_pings_keep_the_socket_and_a_missing_pong_closes_it() {
    let l = Limits { idle_timeout: Duration::from_secs(3600), ..limits() };
    let mut h = start(l.clone());
    h.next_json().await;
    let t0 = Instant::now();
    for n in 1..=3u64 {
        let ping = h.next().await;
        assert_eq!(ping, WsMessage::Ping(Bytes::from(n.to_string())));
        assert_eq!(Instant::now() - t0, l.heartbeat_interval * n as u32);
        h.send(WsMessage::Pong(Bytes::from(n.to_string())));
    }
    // The fourth Ping goes unanswered.
    assert!(matches!(h.next().await, WsMessage::Ping(_)));
    let pinged = Instant::now();
    let frame = h.close().await;
    assert_eq!(Instant::now() - pinged, l.pong_timeout);
    assert_eq!((frame.code, frame.reason.as_str()), (close::PONG_TIMEOUT, "no pong within 10s"));
    assert_eq!(h.task.await.unwrap(), Outcome::PongTimeout);
}

#[tokio::test(start_paused = true)]
async fn idle_socket_closes_after_the_idle_timeout_and_data_postpones_it() {
    let l = Limits { heartbeat_interval: Duration::from_secs(3600), ..limits() };
    let mut h = start(l.clone());
    h.next_json().await;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(200)).await;
    h.send(WsMessage::Binary(Bytes::from_static(b"x")));
    assert_eq!(h.inputs.recv().await.unwrap(), "input:x");
    let frame = h.close().await;
    assert_eq!(Instant::now() - t0, Duration::from_secs(200) + l.idle_timeout);
    assert_eq!((frame.code, frame.reason.as_str()), (close::NORMAL, "idle timeout (5m)"));
    assert_eq!(h.task.await.unwrap(), Outcome::IdleTimeout);
}

#[tokio::test(start_paused = true)]
async fn output_counts_as_activity() {
    let l = Limits { heartbeat_interval: Duration::from_secs(3600), ..limits() };
    let mut h = start(l.clone());
    h.next_json().await;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(250)).await;
    h.output
        .send(SessionEvent::Output { offset: 0, data: Bytes::from_static(b"tick") })
        .await
        .unwrap();
    h.next().await;
    h.close().await;
    assert_eq!(Instant::now() - t0, Duration::from_secs(250) + l.idle_timeout);
}

#[tokio::test(start_paused = true)]
async fn oversized_messages_close_with_1009_naming_size_and_limit() {
    let mut h = start(limits());
    h.next_json().await;
    h.send(WsMessage::Binary(Bytes::from(vec![b'a'; 65])));
    let frame = h.close().await;
    assert_eq!(frame.code, close::TOO_BIG);
    assert_eq!(frame.reason, "message of 65 bytes exceeds the 64-byte limit");
    assert!(h.inputs.try_recv().is_err(), "nothing of it reached the terminal");

    let mut h = start(limits());
    h.next_json().await;
    h.browser.unbounded_send(Err(RecvError::TooLarge { size: Some(70000), max: 64 })).unwrap();
    assert_eq!(h.close().await.reason, "message of 70000 bytes exceeds the 64-byte limit");
}

#[tokio::test(start_paused = true)]
async fn takeover_delete_and_shutdown_close_with_their_codes() {
    for (reason, code) in [(StopReason::TakenOver, 4000), (StopReason::Deleted, 4002)] {
        let mut h = start(limits());
        h.next_json().await;
        h.stop.stop(reason);
        assert_eq!(h.close().await.code, code);
        assert_eq!(h.task.await.unwrap(), Outcome::Stopped(reason));
    }
    let mut h = start(limits());
    h.next_json().await;
    h.shutdown.cancel();
    assert_eq!(h.close().await.code, close::GOING_AWAY);
}

#[tokio::test(start_paused = true)]
async fn losing_ptyd_closes_with_1011_ipc_error() {
    let mut h = start(limits());
    h.next_json().await;
    // Dropping the only sender ends the fake attachment like a broken connection.
    h.output = mpsc::channel(1).0;
    let frame = h.close().await;
    assert_eq!(frame.code, close::INTERNAL);
    assert_eq!(frame.reason, "IpcError: ptyd closed the connection");
}

#[tokio::test(start_paused = true)]
async fn resumed_attachment_announces_the_lost_range() {
    let reply = AttachReply::bytes(SessionId::new(), 100, 40, 130);
    let mut h = start_with(limits(), reply);
    let hello = h.next_json().await;
    assert_eq!((hello["offset"].as_u64(), hello["end"].as_u64()), (Some(100), Some(130)));
    assert_eq!(hello["dropped"].as_u64(), Some(40));
    let dropped = h.next_json().await;
    assert_eq!(dropped, serde_json::json!({"type": "dropped", "offset": 60, "bytes": 40}));
}

#[test]
fn seconds_read_naturally() {
    assert_eq!(secs(Duration::from_secs(10)), "10");
    assert_eq!(secs(Duration::from_millis(200)), "0.2");
    assert_eq!(secs(Duration::from_millis(2250)), "2.25");
}

#[test]
fn close_reasons_fit_the_frame() {
    let long = Outcome::IpcLost("é".repeat(100));
    let frame = long.close_frame(&limits()).unwrap();
    assert!(frame.reason.len() <= MAX_REASON);
    assert!(frame.reason.starts_with("IpcError: "));
}

#[tokio::test(start_paused = true)]
async fn acks_hold_output_between_the_watermarks() {
    // limits(): pause above 16 unacknowledged bytes, resume at 4 or fewer.
    let mut h = start(limits());
    assert_eq!(h.next_json().await["type"], "hello");
    h.send(WsMessage::Text(r#"{"type":"ack","offset":0}"#.into()));
    // Control frames are handled in order: once `pong` is back, the ack is in force.
    h.send(WsMessage::Text(r#"{"type":"ping"}"#.into()));
    assert_eq!(h.next_json().await["type"], "pong");
    let output = h.output.clone();
    tokio::spawn(async move {
        for i in 0..10u64 {
            let data = Bytes::from(vec![b'a' + i as u8; 8]);
            let _ = output.send(SessionEvent::Output { offset: i * 8, data }).await;
        }
    });
    let mut received = 0u64;
    let quiet = Duration::from_secs(5);
    while let Ok(WsMessage::Binary(b)) = tokio::time::timeout(quiet, h.next_non_ping()).await {
        received += b.len() as u64;
    }
    assert_eq!(received, 24, "paused once over 16 bytes were unacknowledged");

    // An ack down to 8 unacknowledged is above the low watermark: still paused.
    h.send(WsMessage::Text(r#"{"type":"ack","offset":16}"#.into()));
    assert!(tokio::time::timeout(quiet, h.next_non_ping()).await.is_err());
    // A stale ack changes nothing; one down to 4 resumes until 16 are over again.
    h.send(WsMessage::Text(r#"{"type":"ack","offset":3}"#.into()));
    h.send(WsMessage::Text(r#"{"type":"ack","offset":20}"#.into()));
    while let Ok(WsMessage::Binary(b)) = tokio::time::timeout(quiet, h.next_non_ping()).await {
        received += b.len() as u64;
    }
    assert_eq!(received, 40);
    // Acking everything lets the rest through.
    h.send(WsMessage::Text(r#"{"type":"ack","offset":40}"#.into()));
    while let Ok(WsMessage::Binary(b)) = tokio::time::timeout(quiet, h.next_non_ping()).await {
        received += b.len() as u64;
    }
    assert_eq!(received, 64, "40 acked + 24 more before pausing again");
}

#[tokio::test(start_paused = true)]
async fn without_acks_output_is_not_held() {
    let mut h = start(limits());
    assert_eq!(h.next_json().await["type"], "hello");
    let output = h.output.clone();
    tokio::spawn(async move {
        for i in 0..10u64 {
            let data = Bytes::from(vec![b'x'; 8]);
            let _ = output.send(SessionEvent::Output { offset: i * 8, data }).await;
        }
    });
    let mut received = 0;
    while received < 80 {
        match h.next_non_ping().await {
            WsMessage::Binary(b) => received += b.len(),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn output_already_queued_goes_out_merged_and_what_follows_it_in_order() {
    let mut h = start(limits());
    // Queued before the loop first runs, as when the socket fell behind.
    for (offset, piece) in [(0, "ab"), (2, "cd"), (4, "ef")] {
        let data = Bytes::from_static(piece.as_bytes());
        h.output.try_send(SessionEvent::Output { offset, data }).unwrap();
    }
    h.output.try_send(SessionEvent::Dropped { offset: 6, bytes: 4 }).unwrap();
    let data = Bytes::from_static(b"gh");
    h.output.try_send(SessionEvent::Output { offset: 10, data }).unwrap();
    h.output.try_send(SessionEvent::Exit(ExitStatus { code: Some(0), signal: None })).unwrap();

    assert_eq!(h.next_json().await["type"], "hello");
    assert_eq!(h.next().await, WsMessage::Binary(Bytes::from_static(b"abcdef")));
    let dropped = h.next_json().await;
    assert_eq!((dropped["type"].as_str(), dropped["offset"].as_u64()), (Some("dropped"), Some(6)));
    assert_eq!(h.next().await, WsMessage::Binary(Bytes::from_static(b"gh")));
    assert_eq!(h.next_json().await["type"], "exit");
    assert!(matches!(h.task.await.unwrap(), Outcome::Exited(..)));
}

#[tokio::test(start_paused = true)]
async fn a_merged_frame_stays_within_its_bound() {
    let mut h = start(limits());
    let piece = Bytes::from(vec![b'x'; 12 * 1024]);
    for i in 0..4u64 {
        let ev = SessionEvent::Output { offset: i * piece.len() as u64, data: piece.clone() };
        h.output.try_send(ev).unwrap();
    }
    assert_eq!(h.next_json().await["type"], "hello");
    let sizes: Vec<usize> = [h.next().await, h.next().await]
        .into_iter()
        .map(|m| match m {
            WsMessage::Binary(b) => b.len(),
            other => panic!("expected output, got {other:?}"),
        })
        .collect();
    assert_eq!(sizes, [24 * 1024, 24 * 1024]);
}
