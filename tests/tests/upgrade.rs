//! Live upgrade (`ptyctl upgrade`): ptyd replaces its binary in place and every session
//! goes on: same pids, output byte-exact across the upgrades for a client that re-attaches
//! from its offset, a REPL's variables and half-typed line, vim's screen, exit codes of
//! programs that ended during the handover; clients that connect meanwhile wait instead
//! of being refused; an upgrade that cannot happen changes nothing; no descriptor is
//! left behind.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use ipc_proto::{Client, ClientError, ErrorCode, Follower, SessionEvent, SessionId, SpawnRequest};
use ptyd_tests::{fd_targets, pids_with_cmdline, read_until, Daemon, DaemonOptions, TIMEOUT};

/// `ptyctl upgrade [args]`: its exit code and what it printed.
fn upgrade(daemon: &Daemon, args: &[&str]) -> Result<(i32, String)> {
    let out = daemon.ptyctl(["upgrade"].iter().chain(args)).output()?;
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.code().unwrap_or(-1), text))
}

fn upgrade_ok(daemon: &Daemon) -> Result<String> {
    let (code, text) = upgrade(daemon, &[])?;
    ensure!(code == 0, "ptyctl upgrade exited {code}: {text}\n{}", daemon.log_tail(30));
    Ok(text)
}

/// A client of the daemon at `socket`, once it serves again (a connection made just
/// before an upgrade is closed by it).
async fn reconnect(socket: &Path) -> Result<Client> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let attempt = async {
            let c = Client::connect(socket).await?;
            c.list().await?;
            Ok::<_, ClientError>(c)
        };
        match attempt.await {
            Ok(c) => return Ok(c),
            Err(e) if tokio::time::Instant::now() < deadline => eprintln!("reconnecting: {e}"),
            Err(e) => return Err(e.into()),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Follows a session's output across upgrades with ipc-proto's `Follower`, which
/// re-attaches from the next offset by itself whenever an upgrade cuts the connection,
/// until the session exits; returns every byte, in order, and how often it re-attached.
async fn follow_to_exit(
    socket: &Path,
    session: SessionId,
    first: tokio::sync::oneshot::Sender<()>,
) -> Result<(Vec<u8>, u64)> {
    let mut first = Some(first);
    let mut data = Vec::new();
    let client = reconnect(socket).await?;
    let att = client.attach(session, Some(0), true).await?;
    let mut follower = Follower::new(socket, att, true);
    loop {
        match follower.next().await {
            Some(SessionEvent::Output { offset, data: bytes }) => {
                ensure!(offset == data.len() as u64, "a gap or a repeat at {offset}");
                data.extend_from_slice(&bytes);
                if let Some(tx) = first.take() {
                    let _ = tx.send(());
                }
            }
            Some(SessionEvent::Dropped { offset, bytes }) => {
                bail!("{bytes} bytes dropped at {offset}")
            }
            Some(SessionEvent::Exit(status)) => {
                ensure!(status.code == Some(0), "the counter ended with {status:?}");
                return Ok((data, follower.relinks()));
            }
            None => bail!("the follower lost the session: {:?}", follower.client().close_reason()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_cross_three_upgrades_with_their_pids_output_screens_and_state() -> Result<()> {
    const SHELLS: usize = 96;
    let daemon = Daemon::start(
        DaemonOptions::new().capacity(128).idle_timeout("0").env("PYTHONSTARTUP", ""),
    )
    .await?;
    let client = daemon.try_client().await?;

    let mut shells = Vec::new();
    for i in 0..SHELLS {
        let req = SpawnRequest::new("bash", ["--norc", "--noprofile"]);
        let s = client.spawn(req).await.with_context(|| format!("shell {i}"))?;
        shells.push(s);
    }
    // A shell with state of its own.
    client.input(shells[0].session, b"X=forty-two; PS1='$ '\r".to_vec()).await?;
    // yes, held back by a lossless client that reads nothing.
    let yes = client.spawn(SpawnRequest::new("yes", ["flood"])).await?;
    let holder = daemon.try_client().await?;
    let _held = holder.attach(yes.session, None, true).await?;
    // A python REPL with a variable and a half-typed line.
    let py = client.spawn(SpawnRequest::new("python3", ["-q"])).await?;
    let mut py_out = client.attach(py.session, Some(0), false).await?;
    read_until(&mut py_out, ">>> ", TIMEOUT).await?;
    client.input(py.session, b"x = 6\r".to_vec()).await?;
    read_until(&mut py_out, ">>> ", TIMEOUT).await?;
    client.input(py.session, b"print('answer', x *".to_vec()).await?;
    read_until(&mut py_out, "x *", TIMEOUT).await?;
    drop(py_out);
    // vim, drawn and still.
    let dir = daemon.dir().to_path_buf();
    let file = dir.join("notes.txt");
    std::fs::write(&file, "alpha\nbeta\ngamma\n")?;
    let mut vim_req = SpawnRequest::new("vim", ["-u", "NONE", "-N", file.to_str().unwrap()]);
    vim_req.env.insert("HOME".into(), dir.display().to_string());
    let vim = client.spawn(vim_req).await?;
    let quiet = client.wait_quiet(vim.session, Duration::from_millis(300), Some(TIMEOUT)).await?;
    let (vim_before, _) = client.screen(vim.session, 0, false).await?;
    ensure!(vim_before.lines.iter().any(|l| l == "beta"), "vim not drawn: {quiet:?}");
    // A counter whose every byte must arrive exactly once across the upgrades.
    let script = "i=0; while [ $i -lt 1500 ]; do echo line-$i; i=$((i+1)); \
                  [ $((i % 50)) -eq 0 ] && sleep 0.05; done";
    let mut counter_req = SpawnRequest::new("sh", ["-c", script]);
    counter_req.replay_bytes = Some(1 << 20);
    let counter = client.spawn(counter_req).await?;
    let follower = {
        let socket = daemon.socket().to_path_buf();
        let session = counter.session;
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move { follow_to_exit(&socket, session, first_tx).await });
        // The upgrades happen while it follows.
        first_rx.await.context("the follower never got output")?;
        task
    };

    let pid = daemon.pid();
    let before = client.list().await?;
    drop((client, holder));
    for round in 1..=3 {
        // Off the runtime, so that the follower follows meanwhile.
        let said = tokio::task::block_in_place(|| upgrade_ok(&daemon))?;
        ensure!(said.contains(&format!("upgrade number {round}")), "{said}");
        ensure!(daemon.pid() == pid && process_is_ptyd(pid), "ptyd's pid changed");
    }
    let client = reconnect(daemon.socket()).await?;
    let after = client.list().await?;
    ensure!(after.upgrades == 3, "upgrades: {}", after.upgrades);
    for s in &before.sessions {
        let now = after.sessions.iter().find(|a| a.session == s.session);
        let now = now.with_context(|| format!("session {} is gone", s.session))?;
        ensure!(now.pid == s.pid, "{} changed pid", s.session);
        ensure!(now.output_offset >= s.output_offset, "{} lost output", s.session);
        if s.session != counter.session {
            ensure!(now.exit.is_none(), "{} ended: {:?}", s.session, now.exit);
            ensure!(now.upgrades == 3, "{} lived through {} upgrades", s.session, now.upgrades);
        }
    }

    // The shell kept its variable; the REPL its variable and its half-typed line.
    let mut sh = client.attach(shells[0].session, None, false).await?;
    client.input(shells[0].session, b"echo \"x=$X\"\r".to_vec()).await?;
    read_until(&mut sh, "x=forty-two", TIMEOUT).await?;
    let mut py_out = client.attach(py.session, None, false).await?;
    client.input(py.session, b" 7)\r".to_vec()).await?;
    read_until(&mut py_out, "answer 42", TIMEOUT).await?;
    // vim's screen is what it was, and vim still answers.
    let (vim_after, _) = client.screen(vim.session, 0, false).await?;
    ensure!(vim_after.lines == vim_before.lines, "{:?}\n{:?}", vim_before.lines, vim_after.lines);
    ensure!(
        (vim_after.cursor_row, vim_after.cursor_col)
            == (vim_before.cursor_row, vim_before.cursor_col)
    );
    client.input(vim.session, b"Otyped-after-upgrades\x1b".to_vec()).await?;
    let on = ipc_proto::MatchOn::Screen;
    client.wait_for_on(vim.session, "typed-after-upgrades", None, Some(TIMEOUT), on).await?;
    // yes still runs and is not held back any more: its client left with the old image.
    let yes_at = after.sessions.iter().find(|s| s.session == yes.session).unwrap().output_offset;
    let moved = ptyd_tests::wait_until_with(TIMEOUT, async || {
        client.info(yes.session).await.is_ok_and(|i| i.output_offset > yes_at)
    })
    .await;
    ensure!(moved, "yes stayed paused after its client left");

    // Every byte the counter printed arrived once, in order.
    let (data, reattached) = follower.await??;
    let expected: String = (0..1500).map(|i| format!("line-{i}\r\n")).collect();
    ensure!(data == expected.as_bytes(), "the counter's output differs ({} bytes)", data.len());
    // Cut at least once (an upgrade may also come while it is still connecting).
    ensure!(reattached >= 1, "the follower was never cut off by an upgrade");
    eprintln!("the follower re-attached {reattached} times");
    Ok(())
}

fn process_is_ptyd(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "ptyd")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_connect_during_an_upgrade_wait_instead_of_being_refused() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let socket = daemon.socket().to_path_buf();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Connections served by any loop so far.
    let served_all = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let served_by_all = || served_all.load(std::sync::atomic::Ordering::Relaxed);
    let mut loops = Vec::new();
    for _ in 0..20 {
        let (socket, stop, served_all) = (socket.clone(), stop.clone(), served_all.clone());
        loops.push(tokio::spawn(async move {
            let (mut served, mut cut) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // A refusal (nothing listening) fails the connect itself.
                let stream = tokio::net::UnixStream::connect(&socket)
                    .await
                    .context("a connection was refused")?;
                let served_now = async {
                    let c = Client::handshake(stream, "upgrade-test").await?;
                    c.list().await
                };
                match served_now.await {
                    Ok(_) => {
                        served += 1;
                        served_all.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    // Closed by the upgrade (Upgrading) after it was accepted.
                    Err(_) => cut += 1,
                }
            }
            Ok::<_, anyhow::Error>((served, cut))
        }));
    }
    // The clients are connecting in earnest before the upgrades, and again after them.
    let busy = ptyd_tests::wait_until_async(TIMEOUT, || served_by_all() >= 40).await;
    ensure!(busy, "the clients did not get going: {} served", served_by_all());
    for _ in 0..3 {
        // Off the runtime, so that the clients go on meanwhile.
        tokio::task::block_in_place(|| upgrade_ok(&daemon))?;
    }
    let after = served_by_all();
    let served_again =
        ptyd_tests::wait_until_async(TIMEOUT, || served_by_all() >= after + 40).await;
    ensure!(served_again, "the clients were not served after the upgrades");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for l in loops {
        let (served, cut) = l.await??;
        ensure!(served > 0, "a client was never served");
        total += served + cut;
    }
    eprintln!("{total} connections during three upgrades");
    // One daemon on this socket: nobody started a second one.
    let daemons = pids_with_cmdline(&socket.display().to_string())
        .into_iter()
        .filter(|p| process_is_ptyd(*p))
        .count();
    ensure!(daemons == 1, "{daemons} ptyd processes serve {}", socket.display());
    Ok(())
}

/// A "new ptyd" that is a ptyd when asked what it is, but dies loading the state.
fn dies_loading_state(dir: &Path) -> Result<std::path::PathBuf> {
    let ptyd = ptyd_tests::ptyd_bin()?;
    let path = dir.join("ptyd-that-dies");
    let script = format!(
        "#!/bin/sh\nif [ -n \"$PTYD_HANDOVER_FD\" ]; then echo 'state: bad magic' >&2; exit 3; fi\n\
         exec {} \"$@\"\n",
        ptyd.display()
    );
    std::fs::write(&path, script)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

#[tokio::test]
async fn an_upgrade_that_cannot_happen_changes_nothing_and_says_why() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    let shell = client.spawn(SpawnRequest::new("bash", ["--norc", "--noprofile"])).await?;
    client.input(shell.session, b"Y=still-here\r".to_vec()).await?;
    let dies = dies_loading_state(daemon.dir())?;
    let not_exec = daemon.dir().join("not-executable");
    std::fs::write(&not_exec, "#!/bin/sh\n")?;
    let cases = [
        ("/nonexistent/ptyd".to_string(), "No such file"),
        ("/bin/false".to_string(), "not a ptyd"),
        (not_exec.display().to_string(), "Permission denied"),
        (dies.display().to_string(), "cannot take over this daemon's state"),
    ];
    for (binary, why) in cases {
        let (code, text) = upgrade(&daemon, &["--binary", &binary])?;
        ensure!(code == 125, "upgrade to {binary} exited {code}: {text}");
        ensure!(text.contains("UpgradeFailed") && text.contains(why), "{binary}: {text}");
        // Same daemon, same sessions, serving as before.
        let c = reconnect(daemon.socket()).await?;
        let list = c.list().await?;
        ensure!(list.upgrades == 0, "{binary}: counted as an upgrade");
        ensure!(list.sessions.len() == 1 && list.sessions[0].pid == shell.pid, "{list:?}");
    }
    ensure!(dies.exists());
    let c = reconnect(daemon.socket()).await?;
    let mut att = c.attach(shell.session, None, false).await?;
    c.input(shell.session, b"echo \"$Y\"\r".to_vec()).await?;
    read_until(&mut att, "still-here\r\n", TIMEOUT).await?;
    ensure!(process_is_ptyd(daemon.pid()));
    Ok(())
}

#[tokio::test]
async fn a_program_that_ends_during_the_handover_is_reported_with_its_real_code() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    let go = daemon.dir().join("go");
    let script = format!("while [ ! -e {} ]; do sleep 0.01; done; exit 7", go.display());
    let s = client.spawn(SpawnRequest::new("sh", ["-c", &script])).await?;
    // The new binary, asked to load the state (in a child of the old image, which holds
    // still meanwhile, its reaper paused), lets the program end first. As the daemon
    // itself it only execs ptyd: a shell that forks there would reap ptyd's children.
    let ptyd = ptyd_tests::ptyd_bin()?;
    let new = daemon.dir().join("ptyd-new");
    let wrapper = format!(
        "#!/bin/sh\ncase \"$*\" in *--handover-check*)\n  \
         if [ -n \"$PTYD_HANDOVER_FD\" ]; then touch {}; sleep 0.3; fi;;\nesac\nexec {} \"$@\"\n",
        go.display(),
        ptyd.display()
    );
    std::fs::write(&new, wrapper)?;
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755))?;
    let (code, text) = upgrade(&daemon, &["--binary", new.to_str().unwrap()])?;
    ensure!(code == 0, "{text}\n{}", daemon.log_tail(30));
    let c = reconnect(daemon.socket()).await?;
    let status = c.wait(s.session, Some(TIMEOUT)).await?;
    ensure!(status.code == Some(7), "reported {status:?}");
    let info = c.info(s.session).await?;
    ensure!(info.end_reason == Some(ipc_proto::EndReason::Exited), "{info:?}");
    Ok(())
}

#[tokio::test]
async fn twenty_upgrades_leave_no_descriptor_behind() -> Result<()> {
    let spawn_two = async |daemon: &Daemon| -> Result<Vec<u32>> {
        let c = daemon.try_client().await?;
        let mut pids = Vec::new();
        for _ in 0..2 {
            pids.push(c.spawn(SpawnRequest::new("cat", Vec::<String>::new())).await?.pid);
        }
        Ok(pids)
    };
    let fresh = Daemon::start(DaemonOptions::new()).await?;
    spawn_two(&fresh).await?;
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let pids = spawn_two(&daemon).await?;
    // Once each has started: while the loader and libc set `cat` up, it has files open
    // that it closes again.
    for pid in &pids {
        let settled = ptyd_tests::wait_until_async(TIMEOUT, || {
            fd_targets(*pid).is_ok_and(|fds| fds.iter().all(|(_, t)| t.starts_with("/dev/pts/")))
        })
        .await;
        ensure!(settled, "cat {pid} never settled: {:?}", fd_targets(*pid));
    }
    let child_fds_before: Vec<_> = pids.iter().map(|p| fd_targets(*p)).collect::<Result<_, _>>()?;
    for _ in 0..20 {
        upgrade_ok(&daemon)?;
    }
    reconnect(daemon.socket()).await?;
    // Compared by kind (a socket, the ptmx, an anonymous inode…), as numbers differ.
    let kinds = |pid: u32| -> Result<Vec<String>> {
        let mut k: Vec<String> = fd_targets(pid)?
            .into_iter()
            .map(|(_, t)| {
                let kind = t.split(['[', ':']).next().unwrap_or_default();
                // Files by name: each daemon logs to its own directory.
                kind.rsplit('/').next().unwrap_or_default().to_string()
            })
            .collect();
        k.sort();
        Ok(k)
    };
    // Let connections of the checks above close.
    let settled = ptyd_tests::wait_until_with(TIMEOUT, async || {
        kinds(daemon.pid()).ok() == kinds(fresh.pid()).ok()
    })
    .await;
    ensure!(
        settled,
        "after 20 upgrades: {:?}\na fresh daemon: {:?}",
        fd_targets(daemon.pid())?,
        fd_targets(fresh.pid())?
    );
    for (pid, before) in pids.iter().zip(child_fds_before) {
        let after = fd_targets(*pid)?;
        ensure!(after == before, "session {pid}'s descriptors changed: {before:?} → {after:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_relative_binary_is_refused_before_anything_happens() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    // A relative path is refused before anything happens.
    match client.upgrade(Some("ptyd".into())).await {
        Err(ClientError::Daemon { code: ErrorCode::BadRequest, message }) => {
            ensure!(message.contains("absolute"), "{message}")
        }
        other => bail!("a relative binary: {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_terminal_stays_open_across_an_upgrade_and_sees_every_line_once() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let bridge = ptyd_tests::bridge::Bridge::start(daemon.socket(), &[]).await?;
    let id = bridge.create("").await?;
    let mut ws = bridge.connect(&id, None).await?;
    ws.send_input(b"for i in $(seq 1 300); do echo n-$i; sleep 0.005; done; echo coun''ted\r")
        .await?;
    ws.read_until("n-20\r\n", TIMEOUT).await?;
    tokio::task::block_in_place(|| upgrade_ok(&daemon))?;
    // The socket never closed: the bridge re-attached from where it was.
    let text = ws.read_until("counted", 2 * TIMEOUT).await?;
    for i in 1..=300 {
        let n = text.matches(&format!("n-{i}\r\n")).count();
        ensure!(n == 1, "n-{i} arrived {n} times");
    }
    ensure!(ws.offset == ws.hello["offset"].as_u64().unwrap_or(0) + ws.output.len() as u64);
    // Typing goes to the same shell, on the bridge's new connection.
    ws.send_input(b"echo after-$((40+2))\r").await?;
    ws.read_until("after-42", TIMEOUT).await?;
    bridge.wait_for_log("re-attached session", TIMEOUT).await?;
    bridge
        .wait_for_log(
            &format!(
                "ptyd upgraded from {v} to {v}, 1 terminals carried",
                v = env!("CARGO_PKG_VERSION")
            ),
            TIMEOUT,
        )
        .await?;
    let status = bridge.terminal(&id).await?;
    ensure!(status["status"] == "Active", "{status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ptyctl_attach_goes_on_across_an_upgrade() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    let s = client.spawn(SpawnRequest::new("bash", ["--norc", "--noprofile"])).await?;
    let mut cmd = tokio::process::Command::from(daemon.ptyctl(["attach", &s.session.to_string()]));
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut attach = cmd.spawn()?;
    let mut stdin = attach.stdin.take().context("stdin")?;
    let mut stdout = attach.stdout.take().context("stdout")?;
    let mut seen = String::new();
    let mut read_until = async |needle: &str| -> Result<()> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        let mut buf = [0u8; 4096];
        while !seen.contains(needle) {
            let n = tokio::time::timeout_at(deadline, stdout.read(&mut buf))
                .await
                .with_context(|| format!("waiting for {needle:?}; got {seen:?}"))??;
            ensure!(n > 0, "ptyctl attach ended before {needle:?}; got {seen:?}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        Ok(())
    };
    stdin.write_all(b"echo be''fore\n").await?;
    read_until("before").await?;
    tokio::task::block_in_place(|| upgrade_ok(&daemon))?;
    stdin.write_all(b"echo after-$((40+2))\n").await?;
    read_until("after-42").await?;
    stdin.write_all(b"exit 3\n").await?;
    let status = tokio::time::timeout(TIMEOUT, attach.wait()).await??;
    ensure!(status.code() == Some(3), "ptyctl attach exited {status:?}");
    Ok(())
}

#[tokio::test]
async fn a_lease_holds_its_session_across_an_upgrade_until_its_client_is_back() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().idle_timeout("300ms")).await?;
    let client = daemon.try_client().await?;
    let leased = client.spawn(SpawnRequest::new("cat", Vec::<String>::new())).await?;
    client.lease(leased.session).await?;
    upgrade_ok(&daemon)?;
    let c = reconnect(daemon.socket()).await?;
    // A session started after the upgrade, which nobody holds, goes at its idle timeout:
    // by then the leased one has been idle longer, and stays although its lease's
    // connection closed with the old image.
    let free = c.spawn(SpawnRequest::new("cat", Vec::<String>::new())).await?;
    let status = c.wait(free.session, Some(TIMEOUT)).await?;
    ensure!(status.signal.is_some(), "{status:?}");
    let info = c.info(leased.session).await?;
    ensure!(info.exit.is_none(), "the leased session ended: {info:?}");
    // Its client leases it again, as after any reconnect.
    c.lease(leased.session).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_waits_for_a_spawn_under_way_and_carries_its_session() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    // With the helper stopped, the spawn stays under way until it is continued.
    let held = ptyd_tests::Stopped::new(ptyd_tests::spawn_helper_of(daemon.pid())?)?;
    let spawn = client.spawn(SpawnRequest::new("sh", ["-c", "read x; exit 5"]));
    tokio::pin!(spawn);
    ensure!(futures::poll!(&mut spawn).is_pending(), "spawned with the helper stopped");
    // Answered after the spawn was read: ptyd is carrying it out.
    client.list().await?;
    let mut upgrading = daemon.ptyctl(["upgrade"]).stdout(std::process::Stdio::piped()).spawn()?;
    // The upgrade closes the asking connection before the reply could come (after checking
    // the new binary, which a loaded machine may take a while over).
    let cut =
        tokio::time::timeout(6 * TIMEOUT, &mut spawn).await.context("connection not closed")?;
    ensure!(cut.is_err(), "answered while the helper was stopped: {cut:?}");
    drop(held);
    let status = tokio::task::spawn_blocking(move || upgrading.wait()).await??;
    ensure!(status.success(), "ptyctl upgrade: {status}\n{}", daemon.log_tail(30));
    let c = reconnect(daemon.socket()).await?;
    let sessions = c.list().await?.sessions;
    let [carried] = sessions.as_slice() else { bail!("not one session: {sessions:?}") };
    ensure!(carried.upgrades == 1, "{carried:?}");
    c.input(carried.session, &b"\n"[..]).await?;
    let status = c.wait(carried.session, Some(TIMEOUT)).await?;
    ensure!(status.code == Some(5), "{status:?}");
    Ok(())
}
