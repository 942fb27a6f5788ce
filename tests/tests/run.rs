//! `run`: commands typed into a live bash or zsh, finished when the shell's semantic
//! prompt marks say so, with their exit codes and output; the shell keeps its state.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ipc_proto::{Client, ErrorCode, ExecResult, RunRequest, SessionId, SpawnRequest};
use ptyd_tests::{Daemon, DaemonOptions};

/// An interactive `shell` whose home holds no startup files of the user's.
async fn shell(daemon: &Daemon, client: &Client, shell: &str) -> Result<SessionId> {
    let mut req = SpawnRequest::new(shell, Vec::<String>::new());
    req.env.insert("HOME".into(), daemon.dir().display().to_string());
    Ok(client.spawn(req).await?.session)
}

fn req(session: SessionId, command: &str) -> RunRequest {
    RunRequest { session, command: command.into(), timeout_ms: None, max_output: None }
}

async fn run(client: &Client, session: SessionId, command: &str) -> Result<(ExecResult, String)> {
    let (result, out) = client.run(req(session, command)).await?;
    Ok((result, String::from_utf8_lossy(&out).into_owned()))
}

#[tokio::test]
async fn run_in_bash_and_zsh_answers_with_exit_codes_and_output_and_the_shell_keeps_its_state(
) -> Result<()> {
    for sh in ["bash", "zsh"] {
        let daemon = Daemon::start(DaemonOptions::new()).await?;
        let client = daemon.client().await;
        let s = shell(&daemon, &client, sh).await?;

        // The first run waits for the shell's first prompt.
        let (r, out) = run(&client, s, "true").await?;
        ensure!(r.code == Some(0) && out.is_empty() && !r.timed_out, "{sh}: {r:?} {out:?}");
        let (r, out) = run(&client, s, "echo out; false").await?;
        ensure!(r.code == Some(1) && out == "out\r\n", "{sh}: {r:?} {out:?}");

        // A cd stays: the next run and the session's info see it.
        let (r, _) = run(&client, s, "cd /tmp").await?;
        ensure!(r.code == Some(0), "{sh}: {r:?}");
        let (_, out) = run(&client, s, "pwd").await?;
        ensure!(out == "/tmp\r\n", "{sh}: {out:?}");
        ensure!(client.info(s).await?.cwd.as_deref() == Some("/tmp"), "{sh}: cwd in info");

        // Several lines are one command.
        let (r, out) = run(&client, s, "for i in 1 2 3; do\n  echo n$i\ndone; (exit 4)").await?;
        ensure!(r.code == Some(4) && out == "n1\r\nn2\r\nn3\r\n", "{sh}: {r:?} {out:?}");

        // Output past the limit: the last bytes, and how much there was.
        let mut big = req(s, "seq 1 20000");
        big.max_output = Some(100);
        let (r, out) = client.run(big).await?;
        let all: usize = (1..=20000).map(|i: u32| i.to_string().len() + 2).sum();
        ensure!(r.truncated && r.total_bytes == all as u64, "{sh}: {r:?}");
        ensure!(out.len() == 100 && out.ends_with(b"19999\r\n20000\r\n"), "{sh}: {out:?}");

        // A timeout interrupts the command (Ctrl-C: 130), and the shell goes on.
        let mut slow = req(s, "sleep 30");
        slow.timeout_ms = Some(300);
        let (r, _) = client.run(slow).await?;
        ensure!(r.timed_out && r.code == Some(130), "{sh}: {r:?}");
        let (r, out) = run(&client, s, "echo after").await?;
        ensure!(r.code == Some(0) && out == "after\r\n", "{sh}: {r:?} {out:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_shell_without_integration_is_refused_with_the_reason() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.client().await;
    let sh = client.spawn(SpawnRequest::new("sh", Vec::<String>::new())).await?.session;
    let err = client.run(req(sh, "true")).await.expect_err("sh has no prompt marks");
    ensure!(err.code() == Some(ErrorCode::NoShellIntegration), "{err}");
    ensure!(err.to_string().contains("bash and zsh"), "{err}");

    let off = Daemon::start(DaemonOptions::new().args(["--shell-integration", "off"])).await?;
    let client = off.client().await;
    let bash = shell(&off, &client, "bash").await?;
    let err = client.run(req(bash, "true")).await.expect_err("integration is off");
    ensure!(err.code() == Some(ErrorCode::NoShellIntegration), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_shell_running_a_command_is_busy() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.client().await;
    let s = shell(&daemon, &client, "bash").await?;
    run(&client, s, "true").await?;
    let mut slow = req(s, "echo started; sleep 30");
    slow.timeout_ms = Some(30_000);
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.run(slow).await }
    });
    client.wait_for(s, r"started\r\n", None, Some(Duration::from_secs(10))).await?;
    let err = client.run(req(s, "echo second")).await.expect_err("the shell is busy");
    ensure!(err.code() == Some(ErrorCode::SessionBusy), "{err}");
    client.input(s, &b"\x03"[..]).await?;
    let (r, _) = first.await??;
    ensure!(r.code == Some(130), "{r:?}");
    Ok(())
}

#[tokio::test]
async fn a_command_that_ignores_the_interrupt_is_given_up_after_the_grace() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.client().await;
    let s = shell(&daemon, &client, "bash").await?;
    run(&client, s, "true").await?;
    // Deaf to Ctrl-C and printing all along: the 2 s after the interrupt must still end.
    let mut deaf = req(s, "trap '' INT; while :; do echo tick; sleep 0.1; done");
    deaf.timeout_ms = Some(300);
    let (r, out) = tokio::time::timeout(Duration::from_secs(10), client.run(deaf))
        .await
        .context("run never gave up on a command that ignores Ctrl-C")??;
    ensure!(r.timed_out && r.code.is_none(), "{r:?}");
    ensure!(String::from_utf8_lossy(&out).contains("tick"), "its output so far is kept");
    ensure!(r.duration_ms >= 2_000, "given up only after the grace: {r:?}");
    Ok(())
}
