//! Round-trips every `Request` and `DaemonMessage` variant through the wire format.
//!
//! Each message is encoded with `encode_frame` and decoded with `FrameCodec`, the same
//! path the daemon and the client use, and must come back equal, payload included.
//! `every_variant_has_a_test` stops compiling when a message is added without a test.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use ipc_proto::codec::encode_frame;
use ipc_proto::{
    AckRequest, AttachMode, AttachReply, AttachRequest, DaemonEvent, DaemonEventKind,
    DaemonMessage, DroppedEvent, EndReason, ErrorCode, ErrorReply, EventsDropped, ExecRequest,
    ExecResult, ExitEvent, ExitStatus, Frame, FrameCodec, HelloReply, HelloRequest, KillRequest,
    ListReply, MatchOn, MatchReply, OutputEvent, QuietReply, ReadReply, ReadRequest, Request,
    ResizeRequest, RunRequest, ScreenBuffer, ScreenReply, ScreenRequest, ScreenStart, SessionId,
    SessionInfo, SessionRef, SessionState, SpawnReply, SpawnRequest, SubmitReply, SubmitRequest,
    UpgradeReply, UpgradeRequest, WaitForRequest, WaitQuietRequest, WaitRequest, PROTOCOL_VERSION,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::codec::Decoder;

/// Encodes `frame`, decodes it with a codec reading `T`, and returns the decoded frame.
/// Also checks that the decoder consumed exactly one frame's bytes.
fn round_trip<T>(frame: &Frame<T>) -> Frame<T>
where
    T: Serialize + DeserializeOwned,
{
    let bytes = encode_frame(frame).expect("encode");
    let mut buf = BytesMut::from(&bytes[..]);
    let mut codec = FrameCodec::<T, ()>::default();
    let decoded = codec
        .decode(&mut buf)
        .expect("no framing error")
        .expect("a whole frame")
        .unwrap_or_else(|invalid| panic!("invalid message: {}", invalid.reason));
    assert!(buf.is_empty(), "decoder left {} bytes", buf.len());
    decoded
}

fn assert_request(frame: Frame<Request>) {
    assert_eq!(round_trip(&frame), frame);
}

fn assert_message(frame: Frame<DaemonMessage>) {
    assert_eq!(round_trip(&frame), frame);
}

/// A frame built by hand from a raw JSON header and payload.
fn raw_frame(header: &str, payload: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u32((4 + header.len() + payload.len()) as u32);
    buf.put_u32(header.len() as u32);
    buf.put_slice(header.as_bytes());
    buf.put_slice(payload);
    buf
}

fn decode_request(header: &str, payload: &[u8]) -> Frame<Request> {
    let mut buf = raw_frame(header, payload);
    FrameCodec::<Request, DaemonMessage>::default()
        .decode(&mut buf)
        .expect("no framing error")
        .expect("a whole frame")
        .unwrap_or_else(|invalid| panic!("invalid message: {}", invalid.reason))
}

fn decode_message(header: &str, payload: &[u8]) -> Frame<DaemonMessage> {
    let mut buf = raw_frame(header, payload);
    FrameCodec::<DaemonMessage, Request>::default()
        .decode(&mut buf)
        .expect("no framing error")
        .expect("a whole frame")
        .unwrap_or_else(|invalid| panic!("invalid message: {}", invalid.reason))
}

fn sid() -> SessionId {
    "6f1c2b2e-8d0a-4a57-9a3e-0d6f1f6b9c11".parse().unwrap()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn full_info() -> SessionInfo {
    SessionInfo {
        session: sid(),
        pid: 4242,
        command: "bash".into(),
        args: vec!["-l".into(), "-c".into(), "echo hi".into()],
        cwd: Some("/home/me".into()),
        labels: map(&[("job", "build"), ("owner", "ci")]),
        cols: 132,
        rows: 50,
        state: SessionState::Exited,
        created_at_ms: 1_700_000_000_000,
        last_activity_ms: 1_700_000_000_500,
        attached: 2,
        output_offset: 123_456,
        idle_timeout_ms: 300_000,
        exit: Some(ExitStatus { code: Some(0), signal: None }),
        end_reason: Some(EndReason::IdleTimeout),
        upgrades: 2,
    }
}

fn minimal_info() -> SessionInfo {
    SessionInfo {
        session: SessionId::new(),
        pid: 1,
        command: "sleep".into(),
        args: vec![],
        cwd: None,
        labels: BTreeMap::new(),
        cols: 80,
        rows: 24,
        state: SessionState::Running,
        created_at_ms: 0,
        last_activity_ms: 0,
        attached: 0,
        output_offset: 0,
        idle_timeout_ms: 0,
        exit: None,
        end_reason: None,
        upgrades: 0,
    }
}

/// Fails to compile when a variant is added to `Request` or `DaemonMessage`: add a
/// round-trip test for it below, and document it in PROTOCOL.md, then list it here.
#[allow(dead_code)]
fn every_variant_has_a_test(req: Request, msg: DaemonMessage) {
    match req {
        Request::Hello(_)
        | Request::Spawn(_)
        | Request::Attach(_)
        | Request::Detach(_)
        | Request::Ack(_)
        | Request::Input(_)
        | Request::Resize(_)
        | Request::Kill(_)
        | Request::List
        | Request::Info(_)
        | Request::Wait(_)
        | Request::WaitFor(_)
        | Request::WaitQuiet(_)
        | Request::Submit(_)
        | Request::Exec(_)
        | Request::Run(_)
        | Request::Read(_)
        | Request::Lease(_)
        | Request::Release(_)
        | Request::Subscribe
        | Request::Screen(_)
        | Request::Upgrade(_)
        | Request::Unknown => {}
    }
    match msg {
        DaemonMessage::Hello(_)
        | DaemonMessage::Ok
        | DaemonMessage::Spawned(_)
        | DaemonMessage::Attached(_)
        | DaemonMessage::Sessions(_)
        | DaemonMessage::Session(_)
        | DaemonMessage::Exited(_)
        | DaemonMessage::Matched(_)
        | DaemonMessage::Quiet(_)
        | DaemonMessage::Submitted(_)
        | DaemonMessage::ExecResult(_)
        | DaemonMessage::RunResult(_)
        | DaemonMessage::OutputRange(_)
        | DaemonMessage::Screen(_)
        | DaemonMessage::Upgraded(_)
        | DaemonMessage::Error(_)
        | DaemonMessage::Output(_)
        | DaemonMessage::Dropped(_)
        | DaemonMessage::Exit(_)
        | DaemonMessage::Event(_)
        | DaemonMessage::EventsDropped(_)
        | DaemonMessage::Unknown => {}
    }
}

// ---------------------------------------------------------------- requests

#[test]
fn hello_request() {
    assert_request(Frame::new(
        1,
        Request::Hello(HelloRequest {
            protocol_version: PROTOCOL_VERSION,
            client: "roundtrip/1".into(),
        }),
    ));
    assert_request(Frame::new(
        1,
        Request::Hello(HelloRequest { protocol_version: 2, client: String::new() }),
    ));
}

#[test]
fn spawn_request_minimal() {
    assert_request(Frame::new(2, Request::Spawn(SpawnRequest::new("true", Vec::<String>::new()))));
}

#[test]
fn spawn_request_every_field() {
    let req = SpawnRequest {
        command: "/bin/sh".into(),
        args: vec!["-c".into(), "printf 'a b\\n'".into()],
        env: map(&[("TERM", "dumb"), ("LANG", "C.UTF-8")]),
        cwd: Some("/tmp".into()),
        cols: 200,
        rows: 60,
        labels: map(&[("name", "web"), ("empty", "")]),
        idle_timeout_ms: Some(0),
        replay_bytes: Some(65_536),
        attach: Some(AttachMode { lossless: true }),
        close_with_connection: true,
        interactive: true,
    };
    assert_request(Frame::new(u64::MAX, Request::Spawn(req)));
}

#[test]
fn spawn_request_lossy_attach_and_timeout() {
    let req = SpawnRequest {
        idle_timeout_ms: Some(300),
        attach: Some(AttachMode { lossless: false }),
        ..SpawnRequest::new("echo", ["x"])
    };
    assert_request(Frame::new(3, Request::Spawn(req)));
}

#[test]
fn attach_request() {
    assert_request(Frame::new(
        4,
        Request::Attach(AttachRequest {
            session: sid(),
            since: None,
            lossless: false,
            screen: ScreenStart::Never,
            window: None,
        }),
    ));
    assert_request(Frame::new(
        4,
        Request::Attach(AttachRequest {
            session: sid(),
            since: Some(0),
            lossless: true,
            screen: ScreenStart::Never,
            window: None,
        }),
    ));
    assert_request(Frame::new(
        4,
        Request::Attach(AttachRequest {
            session: sid(),
            since: Some(1 << 40),
            lossless: false,
            screen: ScreenStart::Never,
            window: None,
        }),
    ));
    for screen in [ScreenStart::Auto, ScreenStart::Always] {
        assert_request(Frame::new(
            4,
            Request::Attach(AttachRequest {
                session: sid(),
                since: Some(7),
                lossless: true,
                screen,
                window: None,
            }),
        ));
    }
}

#[test]
fn windowed_attach_and_ack() {
    assert_request(Frame::new(
        4,
        Request::Attach(AttachRequest {
            session: sid(),
            since: Some(0),
            lossless: true,
            screen: ScreenStart::Auto,
            window: Some(128 * 1024),
        }),
    ));
    assert_request(Frame::new(5, Request::Ack(AckRequest { session: sid(), offset: 65536 })));
    // Without a window the field is left out, as version 2 clients send it.
    let json = serde_json::to_string(&Request::Attach(AttachRequest {
        session: sid(),
        since: None,
        lossless: false,
        screen: ScreenStart::Never,
        window: None,
    }))
    .unwrap();
    assert!(!json.contains("window"), "{json}");
}

#[test]
fn detach_request() {
    assert_request(Frame::new(5, Request::Detach(SessionRef { session: sid() })));
}

#[test]
fn input_request_with_binary_payload() {
    let session = sid();
    assert_request(Frame::with_data(
        6,
        Request::Input(SessionRef { session }),
        Bytes::from_static(b"hi\r\n"),
    ));
    let every_byte: Vec<u8> = (0u8..=255).collect();
    assert_request(Frame::with_data(
        6,
        Request::Input(SessionRef { session }),
        Bytes::from(every_byte),
    ));
    // An empty input is still a valid frame.
    assert_request(Frame::new(6, Request::Input(SessionRef { session })));
}

#[test]
fn input_request_near_the_payload_limit() {
    let data = Bytes::from(vec![0x1bu8; ipc_proto::MAX_PAYLOAD_LEN]);
    assert_request(Frame::with_data(7, Request::Input(SessionRef { session: sid() }), data));
}

#[test]
fn resize_request() {
    assert_request(Frame::new(
        8,
        Request::Resize(ResizeRequest { session: sid(), cols: 1, rows: u16::MAX }),
    ));
}

#[test]
fn kill_request() {
    assert_request(Frame::new(9, Request::Kill(KillRequest { session: sid(), signal: None })));
    for name in ["INT", "SIGTERM", "9"] {
        assert_request(Frame::new(
            9,
            Request::Kill(KillRequest { session: sid(), signal: Some(name.into()) }),
        ));
    }
}

#[test]
fn list_request() {
    assert_request(Frame::new(10, Request::List));
}

#[test]
fn info_request() {
    assert_request(Frame::new(11, Request::Info(SessionRef { session: sid() })));
}

#[test]
fn wait_request() {
    assert_request(Frame::new(12, Request::Wait(WaitRequest { session: sid(), timeout_ms: None })));
    assert_request(Frame::new(
        12,
        Request::Wait(WaitRequest { session: sid(), timeout_ms: Some(1500) }),
    ));
}

#[test]
fn wait_for_request() {
    assert_request(Frame::new(
        20,
        Request::WaitFor(WaitForRequest {
            session: sid(),
            pattern: r"\$ $".into(),
            since: None,
            timeout_ms: None,
            on: MatchOn::Output,
        }),
    ));
    assert_request(Frame::new(
        20,
        Request::WaitFor(WaitForRequest {
            session: sid(),
            pattern: r"(?m)^done (\d+)$".into(),
            since: Some(0),
            timeout_ms: Some(5000),
            on: MatchOn::Output,
        }),
    ));
    assert_request(Frame::new(
        14,
        Request::WaitFor(WaitForRequest {
            session: sid(),
            pattern: "Tasks: +\\d+".into(),
            since: None,
            timeout_ms: Some(5000),
            on: MatchOn::Screen,
        }),
    ));
}

#[test]
fn wait_quiet_request() {
    assert_request(Frame::new(
        21,
        Request::WaitQuiet(WaitQuietRequest { session: sid(), quiet_ms: 200, timeout_ms: None }),
    ));
    assert_request(Frame::new(
        21,
        Request::WaitQuiet(WaitQuietRequest {
            session: sid(),
            quiet_ms: 1,
            timeout_ms: Some(10_000),
        }),
    ));
}

#[test]
fn submit_request() {
    assert_request(Frame::new(
        22,
        Request::Submit(SubmitRequest { session: sid(), text: "ls -l".into(), settle_ms: None }),
    ));
    assert_request(Frame::new(
        22,
        Request::Submit(SubmitRequest {
            session: sid(),
            text: "def f():\n    return \"\u{e9}\"\n".into(),
            settle_ms: Some(0),
        }),
    ));
}

#[test]
fn exec_request() {
    let minimal = ExecRequest {
        command: "true".into(),
        args: vec![],
        env: BTreeMap::new(),
        cwd: None,
        cols: 80,
        rows: 24,
        timeout_ms: None,
        max_output: None,
    };
    assert_request(Frame::new(23, Request::Exec(minimal)));
    let full = ExecRequest {
        command: "make".into(),
        args: vec!["-j4".into(), "test".into()],
        env: map(&[("CI", "1")]),
        cwd: Some("/src".into()),
        cols: 120,
        rows: 40,
        timeout_ms: Some(60_000),
        max_output: Some(4096),
    };
    assert_request(Frame::new(23, Request::Exec(full)));
}

#[test]
fn read_request() {
    assert_request(Frame::new(
        24,
        Request::Read(ReadRequest { session: sid(), since: None, max: None }),
    ));
    assert_request(Frame::new(
        24,
        Request::Read(ReadRequest { session: sid(), since: Some(100), max: Some(10) }),
    ));
}

#[test]
fn screen_request_and_reply() {
    assert_request(Frame::new(
        25,
        Request::Screen(ScreenRequest { session: sid(), scrollback: 0, ansi: false }),
    ));
    assert_request(Frame::new(
        25,
        Request::Screen(ScreenRequest { session: sid(), scrollback: 200, ansi: true }),
    ));
    let reply = ScreenReply {
        session: sid(),
        offset: 917,
        cols: 20,
        rows: 2,
        cursor_row: 1,
        cursor_col: 2,
        cursor_visible: false,
        title: "vim — notes.txt".into(),
        buffer: ScreenBuffer::Alternate,
        lines: vec!["old".into(), "~".into(), "~ 漢字".into()],
        scrollback_lines: 1,
    };
    let frame = Frame::with_data(25, DaemonMessage::Screen(reply), Bytes::from_static(b"\x1b[H"));
    assert_message(frame);
}

#[test]
fn lease_and_release_requests() {
    assert_request(Frame::new(25, Request::Lease(SessionRef { session: sid() })));
    assert_request(Frame::new(26, Request::Release(SessionRef { session: sid() })));
}

#[test]
fn subscribe_request() {
    assert_request(Frame::new(27, Request::Subscribe));
}

#[test]
fn unknown_request_type() {
    // `Unknown` serializes as {"type":"unknown"} and decodes back to itself; any other
    // unknown name also lands there, with its extra fields ignored.
    assert_request(Frame::new(13, Request::Unknown));
    let frame = decode_request(r#"{"id":13,"type":"teleport","to":"mars"}"#, b"");
    assert_eq!(frame, Frame::new(13, Request::Unknown));
}

// ---------------------------------------------------------------- replies and events

#[test]
fn hello_reply() {
    assert_message(Frame::new(
        1,
        DaemonMessage::Hello(HelloReply {
            protocol_version: PROTOCOL_VERSION,
            daemon_version: "0.1.0".into(),
            pid: 31337,
        }),
    ));
}

#[test]
fn ok_reply() {
    assert_message(Frame::new(14, DaemonMessage::Ok));
}

#[test]
fn spawned_reply() {
    assert_message(Frame::new(2, DaemonMessage::Spawned(SpawnReply { session: sid(), pid: 4242 })));
}

#[test]
fn attached_reply() {
    assert_message(Frame::new(
        4,
        DaemonMessage::Attached(AttachReply {
            session: sid(),
            offset: 0,
            dropped: 0,
            end: 0,
            snapshot: false,
            cols: None,
            rows: None,
        }),
    ));
    assert_message(Frame::new(
        4,
        DaemonMessage::Attached(AttachReply {
            session: sid(),
            offset: 5904,
            dropped: 5904,
            end: 10_000,
            snapshot: false,
            cols: None,
            rows: None,
        }),
    ));
    // Starting from the screen: the payload reproduces it.
    assert_message(Frame::with_data(
        4,
        DaemonMessage::Attached(AttachReply {
            session: sid(),
            offset: 10_000,
            dropped: 9_000,
            end: 10_000,
            snapshot: true,
            cols: Some(80),
            rows: Some(24),
        }),
        Bytes::from_static(b"\x1b[?1049l\x1b[H\x1b[2Jhello"),
    ));
}

#[test]
fn sessions_reply() {
    assert_message(Frame::new(
        10,
        DaemonMessage::Sessions(ListReply {
            sessions: vec![],
            active: 0,
            capacity: 64,
            daemon_started_at_ms: None,
            upgrades: 0,
        }),
    ));
    assert_message(Frame::new(
        10,
        DaemonMessage::Sessions(ListReply {
            sessions: vec![full_info(), minimal_info()],
            active: 1,
            capacity: 2,
            daemon_started_at_ms: Some(1_700_000_000_000),
            upgrades: 3,
        }),
    ));
    // From a daemon older than upgrades: the fields are optional.
    let old =
        decode_message(r#"{"type":"sessions","id":10,"sessions":[],"active":0,"capacity":1}"#, b"");
    match old.body {
        DaemonMessage::Sessions(r) => assert_eq!((r.daemon_started_at_ms, r.upgrades), (None, 0)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn upgrade_request_and_reply() {
    assert_request(Frame::new(30, Request::Upgrade(UpgradeRequest::default())));
    assert_request(Frame::new(
        30,
        Request::Upgrade(UpgradeRequest { binary: Some("/usr/local/bin/ptyd".into()) }),
    ));
    let frame = decode_request(r#"{"type":"upgrade","id":30}"#, b"");
    assert_eq!(frame.body, Request::Upgrade(UpgradeRequest { binary: None }));
    assert_message(Frame::new(
        30,
        DaemonMessage::Upgraded(UpgradeReply {
            from_version: "0.1.0".into(),
            to_version: "0.2.0".into(),
            binary: "/usr/local/bin/ptyd".into(),
            pid: 4242,
            sessions: 12,
            upgrades: 1,
            duration_ms: 37,
        }),
    ));
}

#[test]
fn session_reply() {
    assert_message(Frame::new(11, DaemonMessage::Session(full_info())));
    assert_message(Frame::new(11, DaemonMessage::Session(minimal_info())));
    let mut killed = full_info();
    killed.exit = Some(ExitStatus { code: None, signal: Some(9) });
    assert_message(Frame::new(11, DaemonMessage::Session(killed)));
}

#[test]
fn exited_reply() {
    assert_message(Frame::new(
        12,
        DaemonMessage::Exited(ExitStatus { code: Some(3), signal: None }),
    ));
    assert_message(Frame::new(
        12,
        DaemonMessage::Exited(ExitStatus { code: None, signal: Some(1) }),
    ));
}

#[test]
fn matched_reply() {
    assert_message(Frame::new(
        20,
        DaemonMessage::Matched(MatchReply {
            session: sid(),
            offset: 10,
            end: 16,
            text: "done 7".into(),
            groups: vec![Some("7".into()), None],
            dropped: 0,
        }),
    ));
    assert_message(Frame::new(
        20,
        DaemonMessage::Matched(MatchReply {
            session: sid(),
            offset: 5000,
            end: 5002,
            text: "$ ".into(),
            groups: vec![],
            dropped: 904,
        }),
    ));
}

#[test]
fn quiet_reply() {
    assert_message(Frame::new(
        21,
        DaemonMessage::Quiet(QuietReply { session: sid(), offset: 1234 }),
    ));
}

#[test]
fn submitted_reply() {
    for bracketed_paste in [false, true] {
        assert_message(Frame::new(
            22,
            DaemonMessage::Submitted(SubmitReply { bracketed_paste, offset: Some(7) }),
        ));
    }
}

#[test]
fn exec_result_reply_with_payload() {
    assert_message(Frame::with_data(
        23,
        DaemonMessage::ExecResult(ExecResult {
            session: sid(),
            code: Some(0),
            signal: None,
            timed_out: false,
            truncated: false,
            total_bytes: 7,
            duration_ms: 12,
        }),
        Bytes::from_static(b"ok\r\n\x1b[0m"),
    ));
    assert_message(Frame::with_data(
        23,
        DaemonMessage::ExecResult(ExecResult {
            session: sid(),
            code: None,
            signal: Some(9),
            timed_out: true,
            truncated: true,
            total_bytes: 1 << 30,
            duration_ms: 60_000,
        }),
        Bytes::from(vec![b'x'; 4096]),
    ));
}

#[test]
fn run_request_and_result() {
    assert_request(Frame::new(
        30,
        Request::Run(RunRequest {
            session: sid(),
            command: "cd /srv && make\nls".into(),
            timeout_ms: Some(60_000),
            max_output: Some(4096),
        }),
    ));
    let minimal =
        r#"{"type":"run","session":"6f1c2b2e-8d0a-4a57-9a3e-0d6f1f6b9c11","command":"ls"}"#;
    let Request::Run(req) = serde_json::from_str::<Request>(minimal).unwrap() else {
        panic!("not a run request")
    };
    assert_eq!((req.timeout_ms, req.max_output), (None, None));
    assert_message(Frame::with_data(
        30,
        DaemonMessage::RunResult(ExecResult {
            session: sid(),
            code: Some(130),
            signal: None,
            timed_out: true,
            truncated: false,
            total_bytes: 3,
            duration_ms: 500,
        }),
        Bytes::from_static(b"^C\r\n"),
    ));
}

#[test]
fn output_range_reply_with_payload() {
    assert_message(Frame::with_data(
        24,
        DaemonMessage::OutputRange(ReadReply {
            session: sid(),
            offset: 100,
            next: 104,
            dropped: 0,
            end: 200,
        }),
        Bytes::from_static(b"\x00\xffab"),
    ));
    assert_message(Frame::new(
        24,
        DaemonMessage::OutputRange(ReadReply {
            session: sid(),
            offset: 0,
            next: 0,
            dropped: 0,
            end: 0,
        }),
    ));
}

#[test]
fn daemon_events() {
    let base = DaemonEvent::new(DaemonEventKind::Spawned, sid(), 1_700_000_000_000);
    let events = [
        DaemonEvent { pid: Some(77), command: Some("bash".into()), ..base.clone() },
        DaemonEvent {
            event: DaemonEventKind::Exited,
            exit: Some(ExitStatus { code: None, signal: Some(1) }),
            end_reason: Some(EndReason::IdleTimeout),
            ..base.clone()
        },
        DaemonEvent { event: DaemonEventKind::IdleKilled, ..base.clone() },
        DaemonEvent {
            event: DaemonEventKind::Resized,
            cols: Some(100),
            rows: Some(30),
            ..base.clone()
        },
        DaemonEvent { event: DaemonEventKind::Unknown, ..base },
    ];
    for ev in events {
        assert_message(Frame::new(0, DaemonMessage::Event(ev)));
    }
}

#[test]
fn daemon_event_optional_fields_are_omitted_and_kinds_are_snake_case() {
    let ev = DaemonEvent::new(DaemonEventKind::IdleKilled, sid(), 5);
    let bytes = encode_frame(&Frame::new(0, DaemonMessage::Event(ev))).unwrap();
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..]).unwrap();
    assert_eq!(
        header,
        serde_json::json!({
            "type": "event",
            "event": "idle_killed",
            "session": sid().to_string(),
            "at_ms": 5,
        })
    );
    let s = sid();
    let future = decode_message(
        &format!(r#"{{"type":"event","event":"migrated","session":"{s}","at_ms":1,"to":"x"}}"#),
        b"",
    );
    let DaemonMessage::Event(ev) = future.body else { panic!("not an event") };
    assert_eq!(ev.event, DaemonEventKind::Unknown);
}

#[test]
fn events_dropped_event() {
    assert_message(Frame::new(0, DaemonMessage::EventsDropped(EventsDropped { count: 3 })));
}

#[test]
fn error_reply_every_code() {
    let cases = [
        (ErrorCode::AtCapacity, "pty pool is at capacity (64)".to_string()),
        (ErrorCode::QuotaExceeded, "session quota reached: 2/2 for uid 1000".to_string()),
        (ErrorCode::HandleNotFound, format!("pty handle not found: {}", sid())),
        (
            ErrorCode::SpawnFailed,
            "pty spawn failed: cwd /nope: No such file or directory (os error 2)".to_string(),
        ),
        (
            ErrorCode::VersionMismatch,
            "unsupported protocol version 3: this daemon speaks versions 1 to 2".to_string(),
        ),
        (ErrorCode::PermissionDenied, "uid 1001 may not use this daemon".to_string()),
        (ErrorCode::MalformedFrame, "malformed frame: header is not a JSON object".to_string()),
        (
            ErrorCode::FrameTooLarge,
            "frame of 2000000 bytes exceeds the 1048576-byte limit".to_string(),
        ),
        (ErrorCode::SessionExited, format!("session {} has exited", sid())),
        (ErrorCode::BadRequest, "the first request must be hello".to_string()),
        (ErrorCode::UnknownRequest, "unknown request type".to_string()),
        (ErrorCode::Timeout, "timed out".to_string()),
        (ErrorCode::ShuttingDown, "ptyd is shutting down".to_string()),
        (
            ErrorCode::UpgradeFailed,
            "/bin/false: not a ptyd: --handover-check printed nothing".to_string(),
        ),
        (ErrorCode::Upgrading, "ptyd is being upgraded; reconnect".to_string()),
        (ErrorCode::Internal, "internal error".to_string()),
    ];
    for (code, message) in cases {
        // With a request id (a failed request) and without (a refused connection).
        for id in [0, 17] {
            assert_message(Frame::new(
                id,
                DaemonMessage::Error(ErrorReply { code, message: message.clone() }),
            ));
        }
    }
}

#[test]
fn error_with_unknown_code_decodes_to_unknown() {
    let frame = decode_message(r#"{"id":3,"type":"error","code":"Quota","message":"m"}"#, b"");
    assert_eq!(
        frame.body,
        DaemonMessage::Error(ErrorReply { code: ErrorCode::Unknown, message: "m".into() })
    );
}

#[test]
fn output_event_with_binary_payload() {
    assert_message(Frame::with_data(
        0,
        DaemonMessage::Output(OutputEvent { session: sid(), offset: 0 }),
        Bytes::from_static(b"hi\r\n"),
    ));
    assert_message(Frame::with_data(
        0,
        DaemonMessage::Output(OutputEvent { session: sid(), offset: u64::MAX / 2 }),
        Bytes::from_static(b"\x1b[31m\x00\xff\xfe\r\n\x07"),
    ));
}

#[test]
fn dropped_event() {
    assert_message(Frame::new(
        0,
        DaemonMessage::Dropped(DroppedEvent { session: sid(), offset: 4096, bytes: 65_536 }),
    ));
}

#[test]
fn exit_event() {
    assert_message(Frame::new(
        0,
        DaemonMessage::Exit(ExitEvent {
            session: sid(),
            status: ExitStatus { code: Some(0), signal: None },
        }),
    ));
    assert_message(Frame::new(
        0,
        DaemonMessage::Exit(ExitEvent {
            session: sid(),
            status: ExitStatus { code: None, signal: Some(15) },
        }),
    ));
}

#[test]
fn unknown_daemon_message_type() {
    assert_message(Frame::new(0, DaemonMessage::Unknown));
    let frame = decode_message(r#"{"type":"progress","percent":50}"#, b"ignored");
    assert_eq!(frame.id, 0);
    assert_eq!(frame.body, DaemonMessage::Unknown);
}

// ---------------------------------------------------------------- wire shape and defaults

#[test]
fn events_are_encoded_without_an_id() {
    let frame = Frame::with_data(
        0,
        DaemonMessage::Output(OutputEvent { session: sid(), offset: 7 }),
        Bytes::from_static(b"x"),
    );
    let bytes = encode_frame(&frame).unwrap();
    let header_len = u32::from_be_bytes(bytes[4..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    assert!(header.get("id").is_none(), "{header}");
    assert_eq!(header["type"], "output");
    assert_eq!(header["offset"], 7);
    assert_eq!(&bytes[8 + header_len..], b"x");
}

#[test]
fn exit_event_header_is_flat() {
    let frame = Frame::new(
        0,
        DaemonMessage::Exit(ExitEvent {
            session: sid(),
            status: ExitStatus { code: Some(2), signal: None },
        }),
    );
    let bytes = encode_frame(&frame).unwrap();
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..]).unwrap();
    assert_eq!(
        header,
        serde_json::json!({
            "type": "exit",
            "session": sid().to_string(),
            "code": 2,
            "signal": null,
        })
    );
}

#[test]
fn spawn_header_missing_optional_fields_gets_the_defaults() {
    let frame = decode_request(r#"{"id":2,"type":"spawn","command":"echo"}"#, b"");
    assert_eq!(frame.id, 2);
    let Request::Spawn(req) = frame.body else { panic!("not a spawn: {:?}", frame.body) };
    assert_eq!(req.command, "echo");
    assert!(req.args.is_empty());
    assert!(req.env.is_empty());
    assert_eq!(req.cwd, None);
    assert_eq!(req.cols, 80);
    assert_eq!(req.rows, 24);
    assert!(req.labels.is_empty());
    assert_eq!(req.idle_timeout_ms, None);
    assert_eq!(req.replay_bytes, None);
    assert_eq!(req.attach, None);
    assert!(!req.close_with_connection);
    assert_eq!(req, SpawnRequest::new("echo", Vec::<String>::new()));
}

#[test]
fn attach_mode_defaults_to_lossy() {
    let frame = decode_request(r#"{"id":2,"type":"spawn","command":"echo","attach":{}}"#, b"");
    let Request::Spawn(req) = frame.body else { panic!("not a spawn") };
    assert_eq!(req.attach, Some(AttachMode { lossless: false }));
}

#[test]
fn other_requests_missing_optional_fields_get_the_defaults() {
    let s = sid();
    let attach = decode_request(&format!(r#"{{"id":4,"type":"attach","session":"{s}"}}"#), b"");
    assert_eq!(
        attach.body,
        Request::Attach(AttachRequest {
            session: s,
            since: None,
            lossless: false,
            screen: ScreenStart::Never,
            window: None,
        })
    );
    let kill = decode_request(&format!(r#"{{"id":9,"type":"kill","session":"{s}"}}"#), b"");
    assert_eq!(kill.body, Request::Kill(KillRequest { session: s, signal: None }));
    let wait = decode_request(&format!(r#"{{"id":12,"type":"wait","session":"{s}"}}"#), b"");
    assert_eq!(wait.body, Request::Wait(WaitRequest { session: s, timeout_ms: None }));
    let hello = decode_request(r#"{"id":1,"type":"hello","protocol_version":1}"#, b"");
    assert_eq!(
        hello.body,
        Request::Hello(HelloRequest { protocol_version: 1, client: String::new() })
    );
}

#[test]
fn exec_header_missing_optional_fields_gets_the_defaults() {
    let frame = decode_request(r#"{"id":23,"type":"exec","command":"make"}"#, b"");
    let Request::Exec(req) = frame.body else { panic!("not an exec: {:?}", frame.body) };
    assert_eq!(
        req,
        ExecRequest {
            command: "make".into(),
            args: vec![],
            env: BTreeMap::new(),
            cwd: None,
            cols: 80,
            rows: 24,
            timeout_ms: None,
            max_output: None,
        }
    );
}

#[test]
fn agent_requests_missing_optional_fields_get_the_defaults() {
    let s = sid();
    let wait_for = decode_request(
        &format!(r#"{{"id":20,"type":"wait_for","session":"{s}","pattern":"x"}}"#),
        b"",
    );
    assert_eq!(
        wait_for.body,
        Request::WaitFor(WaitForRequest {
            session: s,
            pattern: "x".into(),
            since: None,
            timeout_ms: None,
            on: MatchOn::Output,
        })
    );
    let quiet = decode_request(
        &format!(r#"{{"id":21,"type":"wait_quiet","session":"{s}","quiet_ms":50}}"#),
        b"",
    );
    assert_eq!(
        quiet.body,
        Request::WaitQuiet(WaitQuietRequest { session: s, quiet_ms: 50, timeout_ms: None })
    );
    let submit =
        decode_request(&format!(r#"{{"id":22,"type":"submit","session":"{s}","text":"ls"}}"#), b"");
    assert_eq!(
        submit.body,
        Request::Submit(SubmitRequest { session: s, text: "ls".into(), settle_ms: None })
    );
    let read = decode_request(&format!(r#"{{"id":24,"type":"read","session":"{s}"}}"#), b"");
    assert_eq!(read.body, Request::Read(ReadRequest { session: s, since: None, max: None }));
    let subscribe = decode_request(r#"{"id":27,"type":"subscribe"}"#, b"");
    assert_eq!(subscribe.body, Request::Subscribe);
}

#[test]
fn missing_id_decodes_as_zero() {
    assert_eq!(decode_request(r#"{"type":"list"}"#, b"").id, 0);
}

#[test]
fn unknown_fields_are_ignored() {
    let s = sid();
    let frame = decode_request(
        &format!(r#"{{"id":8,"type":"resize","session":"{s}","cols":100,"rows":30,"dpi":96}}"#),
        b"",
    );
    assert_eq!(frame.body, Request::Resize(ResizeRequest { session: s, cols: 100, rows: 30 }));
}

#[test]
fn session_info_missing_optional_fields_gets_the_defaults() {
    let s = sid();
    let header = format!(
        r#"{{"id":11,"type":"session","session":"{s}","pid":7,"command":"sh","cols":80,"rows":24,
            "state":"running","created_at_ms":1,"last_activity_ms":2,"attached":0,
            "output_offset":0,"idle_timeout_ms":0}}"#
    );
    let frame = decode_message(&header, b"");
    let DaemonMessage::Session(info) = frame.body else { panic!("not a session") };
    assert!(info.args.is_empty());
    assert_eq!(info.cwd, None);
    assert!(info.labels.is_empty());
    assert_eq!(info.exit, None);
    assert_eq!(info.state, SessionState::Running);
}

#[test]
fn exit_status_fields_may_be_absent() {
    let frame = decode_message(r#"{"id":12,"type":"exited","code":0}"#, b"");
    assert_eq!(frame.body, DaemonMessage::Exited(ExitStatus { code: Some(0), signal: None }));
}

#[test]
fn several_frames_in_one_buffer_decode_in_order() {
    let frames = [
        Frame::new(2, DaemonMessage::Spawned(SpawnReply { session: sid(), pid: 9 })),
        Frame::with_data(
            0,
            DaemonMessage::Output(OutputEvent { session: sid(), offset: 0 }),
            Bytes::from_static(b"hello\r\n"),
        ),
        Frame::new(
            0,
            DaemonMessage::Exit(ExitEvent {
                session: sid(),
                status: ExitStatus { code: Some(0), signal: None },
            }),
        ),
    ];
    let mut buf = BytesMut::new();
    for f in &frames {
        buf.extend_from_slice(&encode_frame(f).unwrap());
    }
    let mut codec = FrameCodec::<DaemonMessage, Request>::default();
    for f in &frames {
        assert_eq!(&codec.decode(&mut buf).unwrap().unwrap().unwrap(), f);
    }
    assert!(codec.decode(&mut buf).unwrap().is_none());
}

// ---------------------------------------------------------------- documentation

/// Every request type has a `###` heading in PROTOCOL.md, and every reply and event type
/// is named there, so the reference cannot silently fall behind `message.rs`.
#[test]
fn protocol_md_names_every_message_type() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("PROTOCOL.md");
    let md = std::fs::read_to_string(&path).expect("read PROTOCOL.md");
    let headings: Vec<&str> = md.lines().filter(|l| l.starts_with("### ")).collect();
    let s = sid();
    let requests = [
        Request::Hello(HelloRequest { protocol_version: 1, client: String::new() }),
        Request::Spawn(SpawnRequest::new("x", Vec::<String>::new())),
        Request::Attach(AttachRequest {
            session: s,
            since: None,
            lossless: false,
            screen: ScreenStart::Never,
            window: None,
        }),
        Request::Detach(SessionRef { session: s }),
        Request::Input(SessionRef { session: s }),
        Request::Resize(ResizeRequest { session: s, cols: 1, rows: 1 }),
        Request::Kill(KillRequest { session: s, signal: None }),
        Request::List,
        Request::Info(SessionRef { session: s }),
        Request::Wait(WaitRequest { session: s, timeout_ms: None }),
        Request::WaitFor(WaitForRequest {
            session: s,
            pattern: String::new(),
            since: None,
            timeout_ms: None,
            on: MatchOn::Output,
        }),
        Request::WaitQuiet(WaitQuietRequest { session: s, quiet_ms: 1, timeout_ms: None }),
        Request::Submit(SubmitRequest { session: s, text: String::new(), settle_ms: None }),
        Request::Exec(ExecRequest {
            command: String::new(),
            args: vec![],
            env: BTreeMap::new(),
            cwd: None,
            cols: 80,
            rows: 24,
            timeout_ms: None,
            max_output: None,
        }),
        Request::Run(RunRequest {
            session: s,
            command: String::new(),
            timeout_ms: None,
            max_output: None,
        }),
        Request::Read(ReadRequest { session: s, since: None, max: None }),
        Request::Lease(SessionRef { session: s }),
        Request::Release(SessionRef { session: s }),
        Request::Subscribe,
        Request::Screen(ScreenRequest { session: s, scrollback: 0, ansi: false }),
    ];
    for req in &requests {
        let wire = serde_json::to_value(req).unwrap()["type"].as_str().unwrap().to_string();
        assert_eq!(wire, req.kind(), "kind() disagrees with the wire name");
        let name = format!("`{wire}`");
        // `hello` is documented under "Handshake".
        assert!(
            wire == "hello" || headings.iter().any(|h| h.contains(&name)),
            "PROTOCOL.md has no ### heading for request {name}"
        );
    }
    let exit = ExitStatus { code: Some(0), signal: None };
    let messages = [
        DaemonMessage::Hello(HelloReply {
            protocol_version: 1,
            daemon_version: String::new(),
            pid: 1,
        }),
        DaemonMessage::Ok,
        DaemonMessage::Spawned(SpawnReply { session: s, pid: 1 }),
        DaemonMessage::Attached(AttachReply::bytes(s, 0, 0, 0)),
        DaemonMessage::Sessions(ListReply {
            sessions: vec![],
            active: 0,
            capacity: 1,
            daemon_started_at_ms: None,
            upgrades: 0,
        }),
        DaemonMessage::Session(minimal_info()),
        DaemonMessage::Exited(exit),
        DaemonMessage::Matched(MatchReply {
            session: s,
            offset: 0,
            end: 0,
            text: String::new(),
            groups: vec![],
            dropped: 0,
        }),
        DaemonMessage::Quiet(QuietReply { session: s, offset: 0 }),
        DaemonMessage::Submitted(SubmitReply { bracketed_paste: false, offset: None }),
        DaemonMessage::ExecResult(ExecResult {
            session: s,
            code: Some(0),
            signal: None,
            timed_out: false,
            truncated: false,
            total_bytes: 0,
            duration_ms: 0,
        }),
        DaemonMessage::RunResult(ExecResult {
            session: s,
            code: Some(0),
            signal: None,
            timed_out: false,
            truncated: false,
            total_bytes: 0,
            duration_ms: 0,
        }),
        DaemonMessage::OutputRange(ReadReply {
            session: s,
            offset: 0,
            next: 0,
            dropped: 0,
            end: 0,
        }),
        DaemonMessage::Error(ErrorReply { code: ErrorCode::Internal, message: String::new() }),
        DaemonMessage::Output(OutputEvent { session: s, offset: 0 }),
        DaemonMessage::Dropped(DroppedEvent { session: s, offset: 0, bytes: 0 }),
        DaemonMessage::Exit(ExitEvent { session: s, status: exit }),
        DaemonMessage::Event(DaemonEvent::new(DaemonEventKind::Spawned, s, 0)),
        DaemonMessage::EventsDropped(EventsDropped { count: 0 }),
    ];
    for msg in &messages {
        let wire = serde_json::to_value(msg).unwrap()["type"].as_str().unwrap().to_string();
        assert!(md.contains(&format!("`{wire}`")), "PROTOCOL.md never names `{wire}`");
    }
    let codes = [
        ErrorCode::AtCapacity,
        ErrorCode::HandleNotFound,
        ErrorCode::SpawnFailed,
        ErrorCode::VersionMismatch,
        ErrorCode::PermissionDenied,
        ErrorCode::MalformedFrame,
        ErrorCode::FrameTooLarge,
        ErrorCode::SessionExited,
        ErrorCode::BadRequest,
        ErrorCode::UnknownRequest,
        ErrorCode::Timeout,
        ErrorCode::ShuttingDown,
        ErrorCode::NoShellIntegration,
        ErrorCode::SessionBusy,
        ErrorCode::Internal,
    ];
    for code in codes {
        assert!(md.contains(&format!("| `{code}` |")), "PROTOCOL.md's error table lacks {code}");
    }
}
