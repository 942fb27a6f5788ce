//! Hundreds of sessions come and go without leaving zombies, slots or descriptors behind.

use std::time::Duration;

use anyhow::{ensure, Result};
use ipc_proto::SpawnRequest;
use ptyd_tests::{fd_count, wait_until_async, zombie_children, Daemon, DaemonOptions};

const CYCLES: usize = 200;

#[tokio::test]
async fn spawn_kill_and_spawn_exit_cycles_leave_nothing_behind() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().kill_grace("200ms").retention("100ms")).await?;
    let client = daemon.client().await;
    // Warm up once so lazily opened descriptors (runtime, signal pipe) are in the baseline.
    let warm = client.spawn(SpawnRequest::new("true", Vec::<String>::new())).await?;
    client.wait(warm.session, Some(Duration::from_secs(10))).await?;
    ensure!(
        wait_until_async(Duration::from_secs(10), || client_is_idle(&daemon)).await,
        "warm-up never settled"
    );
    let baseline = fd_count(daemon.pid())?;

    for i in 0..CYCLES {
        let killed = client.spawn(SpawnRequest::new("sleep", ["30"])).await?;
        client.kill(killed.session, None).await?;
        let exited = client.spawn(SpawnRequest::new("sh", ["-c", "exit 0"])).await?;
        let a = client.wait(killed.session, Some(Duration::from_secs(10))).await?;
        let b = client.wait(exited.session, Some(Duration::from_secs(10))).await?;
        ensure!(a.signal.is_some() && b.code == Some(0), "cycle {i}: {a:?} {b:?}");
    }

    let list = client.list().await?;
    ensure!(list.active == 0, "pool not empty after the cycles: {} active", list.active);
    ensure!(
        wait_until_async(Duration::from_secs(10), || zombie_children(daemon.pid()).is_empty())
            .await,
        "zombies under ptyd: {:?}",
        zombie_children(daemon.pid())
    );
    ensure!(
        wait_until_async(Duration::from_secs(10), || fd_count(daemon.pid())
            .is_ok_and(|n| n <= baseline))
        .await,
        "ptyd holds {} descriptors, baseline {baseline}",
        fd_count(daemon.pid())?
    );
    Ok(())
}

fn client_is_idle(daemon: &Daemon) -> bool {
    zombie_children(daemon.pid()).is_empty()
}
