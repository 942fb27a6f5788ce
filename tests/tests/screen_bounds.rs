//! Whatever a program prints, the screen model neither panics nor grows ptyd's memory
//! past its bound: random bytes, huge CSI parameters, endless combining characters and an
//! OSC string that never ends.

use anyhow::{ensure, Result};
use ipc_proto::SpawnRequest;
use ptyd_tests::{rss_bytes, Daemon, DaemonOptions, TIMEOUT};

#[tokio::test]
async fn hostile_output_keeps_the_screen_bounded() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().args(["--scrollback-lines", "1000"])).await?;
    let client = daemon.try_client().await?;
    let before = rss_bytes(daemon.pid()).unwrap_or(0);
    let script = r#"
        head -c 4194304 /dev/urandom
        printf '\033[99999999999999999999;99999999999H\033[999999999999@\033[4294967295L'
        printf 'e'; head -c 3000000 /dev/zero | tr '\0' '\001' | sed 's/\x01/\xcc\x81/g'
        printf '\033]2;'; head -c 16777216 /dev/zero | tr '\0' 'a'
        printf '\007\033[!p\033c survived'
        exec sleep 100
    "#;
    let s = client.spawn(SpawnRequest::new("bash", ["--norc", "-c", script])).await?;
    let reply = client
        .wait_for_on(s.session, "survived", None, Some(TIMEOUT * 6), ipc_proto::MatchOn::Screen)
        .await?;
    ensure!(reply.text == "survived", "{reply:?}");
    let after = rss_bytes(daemon.pid()).unwrap_or(0);
    let grown = after.saturating_sub(before) / (1024 * 1024);
    ensure!(grown < 40, "ptyd grew by {grown} MiB for 24 MiB of hostile output");
    let (screen, ansi) = client.screen(s.session, 1000, true).await?;
    ensure!(screen.title.len() <= 1024, "a title of {} bytes", screen.title.len());
    ensure!(ansi.len() < 1 << 20, "a snapshot of {} bytes", ansi.len());
    ensure!(daemon.try_client().await?.list().await.is_ok(), "ptyd still serves");
    Ok(())
}
