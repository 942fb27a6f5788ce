//! ptyctl's commands for scripts and agents against a real daemon: `exec --json` and the
//! streaming `exec` (exit codes, timeouts, truncation), `run`, `wait-for`, `wait-quiet`,
//! `submit`, `read` and `events`.
//!
//! Every ptyctl run is bounded by [`TIMEOUT`]; conditions are awaited with the commands
//! themselves or bounded polling, never fixed sleeps.

use std::io::{BufRead, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ptyd_tests::{pids_with_cmdline, wait_until, Daemon, DaemonOptions, TIMEOUT};
use serde_json::Value;

/// What a finished ptyctl printed, and how it exited.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.stdout)
            .with_context(|| format!("stdout is not one JSON value: {self:?}"))
    }
}

/// Runs `cmd` to completion, feeding it `stdin` when given; kills it after [`TIMEOUT`].
fn run_with_stdin(mut cmd: Command, stdin: Option<&str>) -> Result<Run> {
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    let read_all = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let out = read_all(child.stdout.take().map(|p| Box::new(p) as _));
    let err = read_all(child.stderr.take().map(|p| Box::new(p) as _));
    let mut status = None;
    if !wait_until(TIMEOUT, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    }) {
        let _ = child.kill();
        let _ = child.wait();
        bail!("{cmd:?} did not finish within {TIMEOUT:?}");
    }
    let code = status.and_then(|s| s.code());
    Ok(Run { code, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() })
}

fn run(cmd: Command) -> Result<Run> {
    run_with_stdin(cmd, None)
}

/// `ptyctl spawn -- args…`; returns the session id.
fn spawn(daemon: &Daemon, args: &[&str]) -> Result<String> {
    let out = run(daemon.ptyctl(["spawn", "--"].iter().chain(args)))?;
    ensure!(out.code == Some(0), "spawn {args:?}: {out:?}");
    Ok(out.stdout.trim().to_string())
}

/// The session's current output offset, from `read --max 0`.
fn offset(daemon: &Daemon, id: &str) -> Result<u64> {
    let out = run(daemon.ptyctl(["read", id, "--max", "0", "--json"]))?;
    ensure!(out.code == Some(0), "read: {out:?}");
    out.json()?["end"].as_u64().context("no end in read --json")
}

#[tokio::test]
async fn exec_json_reports_the_exit_code_and_the_output() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let out = run(daemon.ptyctl(["exec", "--json", "--", "sh", "-c", "echo hi; exit 3"]))?;
    ensure!(out.code == Some(3), "{out:?}");
    let json = out.json()?;
    ensure!(json["exit_code"] == 3, "{json}");
    ensure!(json["signal"].is_null() && json["timed_out"] == false, "{json}");
    ensure!(json["output"].as_str().is_some_and(|o| o.contains("hi")), "{json}");
    ensure!(json["truncated"] == false && json["total_bytes"].as_u64() >= Some(2), "{json}");
    ensure!(json["session"].is_string() && json["duration_ms"].is_u64(), "{json}");
    Ok(())
}

#[tokio::test]
async fn exec_json_timeout_ends_the_command() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let arg = format!("30.{}", std::process::id());
    let started = Instant::now();
    let out = run(daemon.ptyctl(["exec", "--json", "--timeout", "300ms", "--", "sleep", &arg]))?;
    ensure!(out.code == Some(124), "{out:?}");
    ensure!(started.elapsed() < Duration::from_secs(8), "took {:?}", started.elapsed());
    let json = out.json()?;
    ensure!(json["timed_out"] == true, "{json}");
    let needle = format!("sleep {arg}");
    ensure!(wait_until(TIMEOUT, || pids_with_cmdline(&needle).is_empty()), "{needle} survived");
    Ok(())
}

#[tokio::test]
async fn exec_json_max_output_keeps_the_last_bytes() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let out =
        run(daemon.ptyctl(["exec", "--json", "--max-output", "10", "--", "seq", "1", "1000"]))?;
    ensure!(out.code == Some(0), "{out:?}");
    let json = out.json()?;
    ensure!(json["truncated"] == true, "{json}");
    ensure!(json["total_bytes"].as_u64().is_some_and(|n| n > 10), "{json}");
    let output = json["output"].as_str().context("no output")?;
    ensure!(output.len() == 10 && output.ends_with("1000\r\n"), "{json}");
    Ok(())
}

#[tokio::test]
async fn exec_json_reports_a_signal_death() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let out = run(daemon.ptyctl(["exec", "--json", "--", "sh", "-c", "kill -TERM $$"]))?;
    ensure!(out.code == Some(143), "{out:?}");
    let json = out.json()?;
    ensure!(json["signal"] == 15 && json["exit_code"].is_null(), "{json}");
    Ok(())
}

#[tokio::test]
async fn exec_max_output_needs_json() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let out = run(daemon.ptyctl(["exec", "--max-output", "10", "--", "true"]))?;
    ensure!(out.code == Some(2) && out.stderr.contains("--json"), "{out:?}");
    Ok(())
}

#[tokio::test]
async fn streaming_exec_exits_with_the_command_and_streams_its_output() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    for (script, expected) in
        [("exit 1", 1), ("echo hello; exit 0", 0), ("exit 3", 3), ("kill -KILL $$", 137)]
    {
        let out = run(daemon.ptyctl(["exec", "--", "sh", "-c", script]))?;
        ensure!(out.code == Some(expected), "{script}: {out:?}");
        if script.starts_with("echo") {
            ensure!(out.stdout.contains("hello"), "{script}: {out:?}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn streaming_exec_timeout_ends_the_session() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let arg = format!("31.{}", std::process::id());
    let script = format!("echo started; exec sleep {arg}");
    let out = run(daemon.ptyctl(["exec", "--timeout", "300ms", "--", "sh", "-c", &script]))?;
    ensure!(out.code == Some(124), "{out:?}");
    ensure!(out.stdout.contains("started"), "{out:?}");
    ensure!(out.stderr.contains("[ptyctl: timed out after 300ms]"), "{out:?}");
    let needle = format!("sleep {arg}");
    ensure!(wait_until(TIMEOUT, || pids_with_cmdline(&needle).is_empty()), "{needle} survived");
    Ok(())
}

#[tokio::test]
async fn wait_for_matches_times_out_and_reports_exits_and_bad_regexes() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let id = spawn(&daemon, &["sh", "-c", "sleep 0.2; echo ready-42; exec sleep 60"])?;
    // From offset 0, so output printed before the call counts too.
    let out =
        run(daemon.ptyctl(["wait-for", &id, r"ready-(\d+)", "--since", "0", "--timeout", "10s"]))?;
    ensure!(out.code == Some(0) && out.stdout == "ready-42\n", "{out:?}");
    let out = run(daemon.ptyctl([
        "wait-for",
        &id,
        r"ready-(\d+)",
        "--since",
        "0",
        "--timeout",
        "10s",
        "--json",
    ]))?;
    ensure!(out.code == Some(0), "{out:?}");
    let json = out.json()?;
    ensure!(json["text"] == "ready-42" && json["groups"][0] == "42", "{json}");
    ensure!(json["end"].as_u64() > json["offset"].as_u64(), "{json}");

    let out = run(daemon.ptyctl(["wait-for", &id, "never-printed", "--timeout", "300ms"]))?;
    ensure!(out.code == Some(124), "timeout: {out:?}");

    let out = run(daemon.ptyctl(["wait-for", &id, "(unclosed", "--timeout", "5s"]))?;
    ensure!(out.code == Some(2) && out.stderr.contains("regex"), "bad regex: {out:?}");

    let done = spawn(&daemon, &["sh", "-c", "echo bye"])?;
    let waited = run(daemon.ptyctl(["wait", &done, "--timeout", "10s"]))?;
    ensure!(waited.code == Some(0), "{waited:?}");
    let out = run(daemon.ptyctl(["wait-for", &done, "never-printed", "--since", "0"]))?;
    ensure!(out.code == Some(3) && out.stderr.contains("exited"), "exited: {out:?}");
    // What it did print is still found.
    let out = run(daemon.ptyctl(["wait-for", &done, "bye", "--since", "0"]))?;
    ensure!(out.code == Some(0) && out.stdout == "bye\n", "{out:?}");
    Ok(())
}

/// The README's readiness example as written: `spawn`, then `wait-for PROMPT` without
/// `--since`, after the prompt is already out; then `submit` and `wait-for RESULT`.
#[tokio::test]
async fn spawn_then_wait_for_finds_a_prompt_printed_before_the_call() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let id = spawn(&daemon, &["sh", "-c", "printf 'ready> '; exec cat"])?;
    ensure!(wait_until(TIMEOUT, || offset(&daemon, &id).is_ok_and(|o| o >= 7)), "no prompt");
    let out = run(daemon.ptyctl(["wait-for", &id, "ready> ", "--timeout", "5s"]))?;
    ensure!(out.code == Some(0) && out.stdout == "ready> \n", "{out:?}");
    let sent = run(daemon.ptyctl(["submit", &id, "hello"]))?;
    ensure!(sent.code == Some(0), "{sent:?}");
    // cat's copy follows the terminal's echo: the second "hello" on its own line.
    let out = run(daemon.ptyctl(["wait-for", &id, r"hello\r\n(hello)", "--timeout", "5s"]))?;
    ensure!(out.code == Some(0), "{out:?}");
    Ok(())
}

/// `submit --wait-for` types and waits in one call, from the moment the text was typed;
/// a bad regex is refused before anything is typed.
#[tokio::test]
async fn submit_wait_for_answers_in_one_call() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let script = "while read -r line; do echo \"got:$line\"; done";
    let id = spawn(&daemon, &["sh", "-c", script])?;
    for word in ["one", "two"] {
        let pattern = r"got:(\w+)";
        let out =
            run(daemon.ptyctl(["submit", &id, word, "--wait-for", pattern, "--timeout", "5s"]))?;
        ensure!(out.code == Some(0) && out.stdout == format!("got:{word}\n"), "{word}: {out:?}");
    }
    let before = offset(&daemon, &id)?;
    let out = run(daemon.ptyctl(["submit", &id, "three", "--wait-for", "(unclosed"]))?;
    ensure!(out.code == Some(2) && out.stderr.contains("invalid regex"), "{out:?}");
    ensure!(offset(&daemon, &id)? == before, "the text was typed despite the bad regex");
    let out = run(daemon.ptyctl([
        "submit",
        &id,
        "four",
        "--wait-for",
        "never-printed",
        "--timeout",
        "300ms",
    ]))?;
    ensure!(out.code == Some(124), "timeout: {out:?}");
    let out = run(daemon.ptyctl(["submit", &id, "five", "--wait-for", r"got:five", "--json"]))?;
    ensure!(out.code == Some(0) && out.json()?["text"] == "got:five", "{out:?}");
    Ok(())
}

#[tokio::test]
async fn run_prints_the_output_and_exits_with_the_commands_code() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let home = format!("HOME={}", daemon.dir().display());
    let out = run(daemon.ptyctl(["spawn", "--env", &home, "--", "bash"]))?;
    ensure!(out.code == Some(0), "{out:?}");
    let id = out.stdout.trim().to_string();
    let out = run(daemon.ptyctl(["run", &id, "--", "echo", "hi;", "(exit 7)"]))?;
    ensure!(out.code == Some(7) && out.stdout == "hi\r\n", "{out:?}");
    let out = run(daemon.ptyctl(["run", &id, "--json", "--", "cd /tmp && pwd"]))?;
    let json = out.json()?;
    ensure!(out.code == Some(0) && json["exit_code"] == 0, "{out:?}");
    ensure!(json["output"] == "/tmp\r\n" && json["timed_out"] == false, "{out:?}");
    let out = run(daemon.ptyctl(["run", &id, "--timeout", "200ms", "--", "sleep 30"]))?;
    ensure!(out.code == Some(124), "timeout: {out:?}");
    let sh = spawn(&daemon, &["sh"])?;
    let out = run(daemon.ptyctl(["run", &sh, "--", "true"]))?;
    ensure!(out.code == Some(125) && out.stderr.contains("NoShellIntegration"), "{out:?}");
    Ok(())
}

#[tokio::test]
async fn ls_and_wait_json_say_why_a_session_ended() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let exits = spawn(&daemon, &["sh", "-c", "exit 3"])?;
    let out = run(daemon.ptyctl(["wait", &exits, "--json"]))?;
    let json = out.json()?;
    ensure!(out.code == Some(3) && json["code"] == 3 && json["end_reason"] == "exited", "{out:?}");
    let sleeper = spawn(&daemon, &["sleep", "30"])?;
    ensure!(run(daemon.ptyctl(["kill", &sleeper]))?.code == Some(0));
    let out = run(daemon.ptyctl(["wait", &sleeper, "--json"]))?;
    ensure!(out.json()?["end_reason"] == "killed", "{out:?}");
    let out = run(daemon.ptyctl(["ls"]))?;
    let line = |id: &str| out.stdout.lines().find(|l| l.starts_with(id)).map(str::to_string);
    let header =
        out.stdout.lines().next().unwrap_or_default().split_whitespace().collect::<Vec<_>>();
    let column = header.iter().position(|h| *h == "ENDED").context("no ENDED column")?;
    for (id, why) in [(&exits, "exited"), (&sleeper, "killed")] {
        let row = line(id).with_context(|| format!("{id} not listed: {out:?}"))?;
        ensure!(row.split_whitespace().nth(column) == Some(why), "{why}: {row}");
    }
    Ok(())
}

#[tokio::test]
async fn plain_gives_text_without_escape_sequences_and_with_lf_line_ends() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let script = r"printf '\033[1;31mred\033[m\tdone\n\033]0;title\007second\n'";
    let out = run(daemon.ptyctl(["exec", "--plain", "--", "sh", "-c", script]))?;
    ensure!(out.code == Some(0) && out.stdout == "red\tdone\nsecond\n", "{out:?}");
    let out = run(daemon.ptyctl(["exec", "--json", "--plain", "--", "sh", "-c", script]))?;
    ensure!(out.json()?["output"] == "red\tdone\nsecond\n", "{out:?}");
    let raw = run(daemon.ptyctl(["exec", "--json", "--", "sh", "-c", script]))?;
    ensure!(raw.json()?["output"].as_str().is_some_and(|o| o.contains("\u{1b}[1;31m")), "{raw:?}");

    let id = spawn(&daemon, &["sh", "-c", &format!("{script}; exec sleep 30")])?;
    let out = run(daemon.ptyctl(["wait-for", &id, "--since", "0", "--plain", r"red.*\n"]))?;
    ensure!(out.code == Some(0) && out.stdout == "red\tdone\n", "{out:?}");
    let out = run(daemon.ptyctl(["read", &id, "--since", "0", "--plain"]))?;
    ensure!(out.stdout == "red\tdone\nsecond\n", "{out:?}");

    let home = format!("HOME={}", daemon.dir().display());
    let out = run(daemon.ptyctl(["spawn", "--env", &home, "--", "bash"]))?;
    let bash = out.stdout.trim().to_string();
    let out = run(daemon.ptyctl(["run", &bash, "--plain", "--", script]))?;
    ensure!(out.code == Some(0) && out.stdout == "red\tdone\nsecond\n", "{out:?}");
    Ok(())
}

#[tokio::test]
async fn wait_quiet_resolves_times_out_and_reports_exits() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let id = spawn(
        &daemon,
        &["sh", "-c", "for i in 1 2 3; do echo tick; sleep 0.1; done; exec sleep 60"],
    )?;
    let out = run(daemon.ptyctl(["wait-quiet", &id, "500ms", "--timeout", "10s", "--json"]))?;
    ensure!(out.code == Some(0), "{out:?}");
    ensure!(out.json()?["offset"].as_u64().is_some_and(|o| o > 0), "{out:?}");
    let out = run(daemon.ptyctl(["wait-quiet", &id, "100ms", "--timeout", "10s"]))?;
    ensure!(out.code == Some(0) && out.stdout.is_empty(), "plain prints nothing: {out:?}");

    let busy = spawn(&daemon, &["sh", "-c", "while :; do echo busy; sleep 0.05; done"])?;
    let out = run(daemon.ptyctl(["wait-quiet", &busy, "2s", "--timeout", "300ms"]))?;
    ensure!(out.code == Some(124), "timeout: {out:?}");

    let quick = spawn(&daemon, &["sh", "-c", "exit 0"])?;
    ensure!(run(daemon.ptyctl(["wait", &quick, "--timeout", "10s"]))?.code == Some(0));
    let out = run(daemon.ptyctl(["wait-quiet", &quick, "100ms", "--timeout", "10s"]))?;
    ensure!(out.code == Some(3), "exited: {out:?}");

    let out = run(daemon.ptyctl(["wait-quiet", &id, "0s"]))?;
    ensure!(out.code == Some(2), "zero quiet is a usage error: {out:?}");
    Ok(())
}

#[tokio::test]
async fn submit_types_into_bash() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let id = spawn(&daemon, &["bash", "--norc", "--noprofile", "-i"])?;
    let since = offset(&daemon, &id)?.to_string();
    // The quotes keep the echoed command line itself from matching.
    let out = run(daemon.ptyctl(["submit", &id, r#"echo sub""mitted"#]))?;
    ensure!(out.code == Some(0) && out.stdout.is_empty(), "{out:?}");
    let out = run(daemon.ptyctl([
        "wait-for",
        &id,
        "submitted\r\n",
        "--since",
        &since,
        "--timeout",
        "10s",
    ]))?;
    ensure!(out.code == Some(0), "{out:?}");

    let since = offset(&daemon, &id)?.to_string();
    let mut cmd = daemon.ptyctl(["submit", &id, "--stdin", "--json"]);
    cmd.stdin(Stdio::piped());
    let out = run_with_stdin(cmd, Some("echo li\"\"ne-one\necho li\"\"ne-two\n"))?;
    ensure!(out.code == Some(0), "{out:?}");
    ensure!(out.json()?["bracketed_paste"].is_boolean(), "{out:?}");
    // Both lines ran, as one submitted input.
    let two_lines = r"(?s)line-one\r\n.*line-two\r\n";
    let out =
        run(daemon.ptyctl(["wait-for", &id, two_lines, "--since", &since, "--timeout", "10s"]))?;
    ensure!(out.code == Some(0), "multi-line submit from stdin: {out:?}");
    Ok(())
}

#[tokio::test]
async fn read_returns_bytes_from_an_offset() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let id = spawn(&daemon, &["sh", "-c", "printf abcdef; exec sleep 60"])?;
    let out = run(daemon.ptyctl(["wait-for", &id, "f", "--since", "0", "--timeout", "10s"]))?;
    ensure!(out.code == Some(0), "{out:?}");

    let out = run(daemon.ptyctl(["read", &id, "--since", "2"]))?;
    ensure!(out.code == Some(0) && out.stdout == "cdef", "{out:?}");
    ensure!(out.stderr.contains("[next offset: 6]"), "{out:?}");

    let out = run(daemon.ptyctl(["read", &id, "--since", "1", "--max", "2", "--json"]))?;
    ensure!(out.code == Some(0) && out.stderr.is_empty(), "{out:?}");
    let json = out.json()?;
    ensure!(json["output"] == "bc" && json["offset"] == 1 && json["next"] == 3, "{json}");
    ensure!(json["end"] == 6 && json["dropped"] == 0, "{json}");

    let out = run(daemon.ptyctl(["read", &id, "--since", "6"]))?;
    ensure!(out.code == Some(0) && out.stdout.is_empty(), "{out:?}");
    ensure!(out.stderr.contains("[next offset: 6]"), "{out:?}");
    Ok(())
}

/// Kills the `events` process however the test ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `ptyctl events <args>` with its stdout lines on a channel, and returns once it
/// is subscribed (events flow only from then on: probe sessions are spawned until one is
/// seen); the probe's first line is returned too.
fn start_events(
    daemon: &Daemon,
    args: &[&str],
) -> Result<(Killed, mpsc::Receiver<String>, String)> {
    let mut cmd = daemon.ptyctl(["events"].iter().chain(args));
    let mut events = Killed(cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?);
    let stdout = events.0.stdout.take().context("no stdout")?;
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        spawn(daemon, &["true"])?;
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(300)) {
            return Ok((events, lines, line));
        }
    }
    bail!("ptyctl events {args:?} printed nothing within {TIMEOUT:?}")
}

#[tokio::test]
async fn events_json_sees_a_session_spawn_and_exit() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let (mut events, lines, first) = start_events(&daemon, &["--json"])?;
    serde_json::from_str::<Value>(&first).with_context(|| first.clone())?;
    let id = spawn(&daemon, &["sh", "-c", "exit 7"])?;
    let deadline = Instant::now() + TIMEOUT;
    let (mut spawned, mut exited) = (false, false);
    while !(spawned && exited) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .with_context(|| format!("spawned {spawned}, exited {exited} for {id}"))?;
        let event: Value = serde_json::from_str(&line).with_context(|| line.clone())?;
        if event["session"] != id.as_str() {
            continue;
        }
        match event["event"].as_str() {
            Some("spawned") => spawned = event["command"] == "sh" && event["pid"].is_u64(),
            Some("exited") => exited = event["exit"]["code"] == 7,
            _ => {}
        }
    }
    ensure!(events.0.try_wait()?.is_none(), "events stopped on its own");
    Ok(())
}

#[tokio::test]
async fn events_prints_plain_lines_and_exits_0_on_interrupt() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    let (mut events, lines, mut first) = start_events(&daemon, &[])?;
    // The feed may start with the `exited` of a `true` spawned just before it subscribed.
    while first.contains(" exited ") {
        first = lines.recv_timeout(TIMEOUT).context("no spawned line after an exited one")?;
    }
    let plain = regex::Regex::new(
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z spawned [0-9a-f-]{36} pid=\d+ true$",
    )?;
    ensure!(plain.is_match(&first), "{first:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(events.0.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )?;
    let mut status = None;
    ensure!(
        wait_until(TIMEOUT, || {
            status = events.0.try_wait().ok().flatten();
            status.is_some()
        }),
        "events did not stop on SIGINT"
    );
    ensure!(status.and_then(|s| s.code()) == Some(0), "{status:?}");
    Ok(())
}

#[tokio::test]
async fn ids_may_be_given_as_unique_prefixes() -> anyhow::Result<()> {
    use anyhow::{ensure, Context};
    let daemon = ptyd_tests::Daemon::start(ptyd_tests::DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    // Seventeen ids: two of them share a first hex digit.
    let mut ids = Vec::new();
    for _ in 0..17 {
        ids.push(
            client.spawn(ipc_proto::SpawnRequest::new("sleep", ["100"])).await?.session.to_string(),
        );
    }
    let short = &ids[0][..8];
    let out = daemon.ptyctl(["info", short, "--json"]).output()?;
    ensure!(out.status.success(), "{out:?}");
    ensure!(String::from_utf8_lossy(&out.stdout).contains(&ids[0]), "{out:?}");

    let first = |id: &String| id.chars().next().unwrap_or('0');
    let shared =
        ids.iter().map(first).find(|c| ids.iter().filter(|id| first(id) == *c).count() > 1);
    let c = shared.context("no shared first digit among 17 ids")?.to_string();
    let out = daemon.ptyctl(["info", &c]).output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "an ambiguous prefix is refused: {out:?}");
    ensure!(err.contains(&format!("session id prefix '{c}' is ambiguous")), "{err}");
    let candidates: Vec<&String> = ids.iter().filter(|id| id.starts_with(&c)).collect();
    ensure!(
        candidates.iter().all(|id| err.contains(id.as_str())),
        "every candidate is listed: {err}"
    );

    let unknown = (0..u32::MAX)
        .map(|n| format!("{n:08x}"))
        .find(|p| !ids.iter().any(|id| id.starts_with(p)))
        .context("a prefix nobody has")?;
    let out = daemon.ptyctl(["kill", &unknown]).output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "{out:?}");
    ensure!(
        err.contains(&format!("HandleNotFound: no session id starts with '{unknown}'")),
        "{err}"
    );
    let out = daemon.ptyctl(["info", "not-hex!"]).output()?;
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("invalid session id 'not-hex!'"),
        "{out:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_reader_that_stops_reading_ends_ptyctl_quietly() -> anyhow::Result<()> {
    use anyhow::ensure;
    let daemon = ptyd_tests::Daemon::start(ptyd_tests::DaemonOptions::new()).await?;
    let client = daemon.try_client().await?;
    for _ in 0..30 {
        client.spawn(ipc_proto::SpawnRequest::new("sleep", ["100"])).await?;
    }
    let ptyctl = ptyd_tests::ptyctl_bin()?;
    for args in ["ls", "doctor", "exec -- seq 1 200000", "ls --json"] {
        // bash reports each member's status; `head` closes the pipe after one line.
        let script = format!(
            "{} --socket {} {args} | head -1 >/dev/null; echo \"status=${{PIPESTATUS[0]}}\"",
            ptyctl.display(),
            daemon.socket().display()
        );
        let out = std::process::Command::new("bash").args(["-c", &script]).output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(!stderr.contains("panicked"), "ptyctl {args} panicked: {stderr}");
        ensure!(
            stdout.contains("status=141") || stdout.contains("status=0"),
            "ptyctl {args}: {stdout} {stderr}"
        );
        ensure!(stderr.trim().is_empty(), "ptyctl {args} said something: {stderr}");
    }
    // The exec's session is ended with it, as when its client goes.
    ensure!(
        ptyd_tests::wait_until_with(ptyd_tests::TIMEOUT, async || {
            client.list().await.is_ok_and(|l| {
                l.sessions.iter().filter(|s| s.command == "seq").all(|s| s.exit.is_some())
            })
        })
        .await,
        "the exec's session still runs"
    );
    Ok(())
}

#[tokio::test]
async fn spawn_and_exec_start_in_the_callers_directory_and_may_inherit_its_environment(
) -> anyhow::Result<()> {
    use anyhow::ensure;
    let daemon = ptyd_tests::Daemon::start(ptyd_tests::DaemonOptions::new()).await?;
    let here = tempfile::tempdir()?;
    let out = daemon.ptyctl(["exec", "--", "pwd"]).current_dir(here.path()).output()?;
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let want = here.path().canonicalize()?;
    ensure!(std::path::Path::new(&printed).canonicalize()? == want, "{printed:?} vs {want:?}");
    // --cwd still wins, relative to the caller.
    std::fs::create_dir(here.path().join("sub"))?;
    let out =
        daemon.ptyctl(["exec", "--cwd", "sub", "--", "pwd"]).current_dir(here.path()).output()?;
    ensure!(String::from_utf8_lossy(&out.stdout).trim().ends_with("/sub"), "{out:?}");
    // The caller's environment only when asked for.
    let echo = ["exec", "--", "sh", "-c", "echo value=${PTYD_TEST_INHERIT:-unset}"];
    let out = daemon.ptyctl(echo).env("PTYD_TEST_INHERIT", "from-caller").output()?;
    ensure!(String::from_utf8_lossy(&out.stdout).contains("value=unset"), "{out:?}");
    let inherit =
        ["exec", "--env-inherit", "--", "sh", "-c", "echo value=${PTYD_TEST_INHERIT:-unset}"];
    let out = daemon.ptyctl(inherit).env("PTYD_TEST_INHERIT", "from-caller").output()?;
    ensure!(String::from_utf8_lossy(&out.stdout).contains("value=from-caller"), "{out:?}");
    Ok(())
}
