//! Smoke test: the real ptyd starts, spawns `echo hi` attached losslessly, and the
//! output and exit status come back over the socket.

use ipc_proto::{AttachMode, SpawnRequest};
use ptyd_tests::{read_to_exit, read_until, Daemon, DaemonOptions, TIMEOUT};

#[tokio::test]
async fn echo_hi_round_trip() {
    let mut daemon = Daemon::start(DaemonOptions::new()).await.expect("start ptyd");
    let client = daemon.client().await;
    assert_eq!(client.daemon().protocol_version, ipc_proto::PROTOCOL_VERSION);
    assert_eq!(client.daemon().pid, daemon.pid());

    let (spawned, mut att) = client
        .spawn_attached(SpawnRequest::new("echo", ["hi"]), AttachMode { lossless: true })
        .await
        .expect("spawn echo");
    let seen = read_until(&mut att, "hi", TIMEOUT).await.expect("read hi");
    assert!(seen.contains("hi"), "{seen:?}");
    let rest = read_to_exit(&mut att, TIMEOUT).await.expect("read to exit");
    assert_eq!(rest.exit.and_then(|s| s.code), Some(0), "{rest:?}");

    let status = client.wait(spawned.session, Some(TIMEOUT)).await.expect("wait");
    assert_eq!(status.code, Some(0));

    drop(att);
    drop(client);
    let status = daemon.stop().await.expect("stop ptyd");
    assert!(status.success(), "ptyd exited with {status}; log:\n{}", daemon.log());
}
