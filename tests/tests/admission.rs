//! Capacity split by principal: a uid at `--max-sessions-per-uid` gets `QuotaExceeded`
//! while another uid still spawns; `--interactive-reserve` keeps slots for people when
//! agents fill the rest; the bridge answers a quota with 429 and `Retry-After`.

use anyhow::{bail, ensure, Context, Result};
use ipc_proto::{ClientError, ErrorCode, SpawnRequest};
use ptyd_tests::bridge::Bridge;
use ptyd_tests::outsider::{
    open_up, outsider_uid, ptyctl_as_outsider, require_root, OUTSIDER_GROUP,
};
use ptyd_tests::{Daemon, DaemonOptions};

fn sleeper() -> SpawnRequest {
    SpawnRequest::new("sleep", ["1000"])
}

#[tokio::test]
async fn a_uid_at_its_limit_is_refused_while_another_uid_still_spawns() -> Result<()> {
    require_root()?;
    let nobody = outsider_uid()?;
    let daemon = Daemon::start(DaemonOptions::new().args([
        "--max-sessions-per-uid",
        "2",
        "--allow-group",
        OUTSIDER_GROUP,
    ]))
    .await?;
    let ptyctl = open_up(&daemon)?;
    let client = daemon.try_client().await?;
    client.spawn(sleeper()).await?;
    client.spawn(sleeper()).await?;
    match client.spawn(sleeper()).await {
        Err(ClientError::Daemon { code: ErrorCode::QuotaExceeded, message }) => {
            ensure!(message == "session quota reached: 2/2 for uid 0", "{message}")
        }
        other => bail!("root's third session: expected QuotaExceeded, got {other:?}"),
    }
    // The group is checked per connection by the daemon; nobody's primary group is it.
    for n in 1..=2 {
        let (_, out) =
            ptyctl_as_outsider(&ptyctl, &daemon, &["spawn", "--", "sleep", "1000"]).await?;
        ensure!(out.status.success(), "nobody's spawn {n}: {out:?}");
    }
    let (_, out) = ptyctl_as_outsider(&ptyctl, &daemon, &["spawn", "--", "sleep", "1000"]).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "nobody's third spawn succeeded");
    ensure!(
        stderr.contains(&format!("QuotaExceeded: session quota reached: 2/2 for uid {nobody}")),
        "{stderr}"
    );
    // An ended session gives its slot back to its own uid.
    let list = client.list().await?;
    let mine = list.sessions.iter().find(|s| s.exit.is_none()).context("no session")?;
    client.kill(mine.session, None).await?;
    client.wait(mine.session, None).await?;
    client.spawn(sleeper()).await.context("root spawns again after one ended")?;
    Ok(())
}

#[tokio::test]
async fn the_interactive_reserve_holds_when_agents_fill_the_rest() -> Result<()> {
    let daemon =
        Daemon::start(DaemonOptions::new().args(["--capacity", "3", "--interactive-reserve", "1"]))
            .await?;
    let client = daemon.try_client().await?;
    client.spawn(sleeper()).await?;
    client.spawn(sleeper()).await?;
    match client.spawn(sleeper()).await {
        Err(ClientError::Daemon { code: ErrorCode::QuotaExceeded, message }) => ensure!(
            message
                == "agent sessions are at their share: 2/2 (the other 1 slots are reserved for \
                    interactive sessions)",
            "{message}"
        ),
        other => bail!("a third agent session: expected QuotaExceeded, got {other:?}"),
    }
    let out = daemon.ptyctl(["spawn", "--interactive", "--", "sleep", "1000"]).output()?;
    ensure!(out.status.success(), "the reserved slot: {out:?}");
    let req = SpawnRequest { interactive: true, ..sleeper() };
    match client.spawn(req).await {
        Err(ClientError::Daemon { code: ErrorCode::AtCapacity, message }) => {
            ensure!(message == "pty pool is at capacity (3)", "{message}")
        }
        other => bail!("past the capacity: expected AtCapacity, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn the_bridge_answers_a_quota_with_429_and_retry_after() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().args(["--max-sessions-per-uid", "1"])).await?;
    let bridge = Bridge::start(daemon.socket(), &[]).await?;
    bridge.create("").await?;
    let r = bridge.post("/api/terminals", "").await?;
    ensure!(r.status == 429, "{r:?}");
    ensure!(r.json()?["error"] == "QuotaExceeded", "{r:?}");
    ensure!(r.header("retry-after").is_some(), "{r:?}");
    Ok(())
}
