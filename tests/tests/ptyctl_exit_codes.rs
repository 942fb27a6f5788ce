//! ptyctl's one exit-code table (`ptyctl --help`, README), subcommand by subcommand:
//! 2 usage, 3 the session exited, 4 no such session, 5 refused, 124 timeout, 125 other
//! failures; `exec`, `run`, `wait` and `attach` exit with the session's own code, and
//! with 125 for every failure but a usage error or a timeout.

use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};
use ptyd_tests::{ptyctl_bin, Daemon, DaemonOptions};

/// Runs ptyctl with `args` against `daemon`; its exit code.
fn code(daemon: &Daemon, args: &[&str]) -> Result<i32> {
    let out = daemon
        .ptyctl(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("ptyctl {args:?}"))?;
    out.status.code().with_context(|| format!("ptyctl {args:?} was killed: {out:?}"))
}

fn expect(daemon: &Daemon, args: &[&str], want: i32) -> Result<()> {
    let got = code(daemon, args)?;
    ensure!(got == want, "ptyctl {} exited {got}, not {want}", args.join(" "));
    Ok(())
}

fn spawn(daemon: &Daemon, args: &[&str]) -> Result<String> {
    let out = daemon.ptyctl(["spawn", "--"].iter().chain(args)).output()?;
    ensure!(out.status.success(), "{out:?}");
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

#[tokio::test]
async fn every_subcommand_exits_by_the_one_table() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().capacity(3)).await?;
    let ghost = "6f1c2b2e-8d0a-4a57-9a3e-0d6f1f6b9c11";
    let running = spawn(&daemon, &["sleep", "60"])?;
    let exited = spawn(&daemon, &["true"])?;
    expect(&daemon, &["wait", &exited], 0)?;

    // 0: success.
    for args in [
        &["ls"][..],
        &["info", &running],
        &["resize", &running, "100x30"],
        &["send", &running, "x"],
        &["read", &running],
        &["screen", &running],
        &["doctor"],
        &["completions", "bash"],
        &["man"],
    ] {
        expect(&daemon, args, 0)?;
    }

    // 4: no such session, for every command that names one and reports.
    for args in [
        &["info", ghost][..],
        &["send", ghost, "x"],
        &["resize", ghost, "80x24"],
        &["kill", ghost],
        &["read", ghost],
        &["screen", ghost],
        &["wait-for", ghost, "x"],
        &["wait-quiet", ghost, "1s"],
        &["submit", ghost, "x"],
        &["info", "abcdef0"],
    ] {
        expect(&daemon, args, 4)?;
    }
    // …while the commands that pass on a session's code say 125.
    for args in [&["wait", ghost][..], &["attach", ghost], &["run", ghost, "--", "true"]] {
        expect(&daemon, args, 125)?;
    }

    // 2: usage, whether clap or the daemon finds it.
    for args in [
        &["ls", "--no-such-flag"][..],
        &["resize", &running, "wide"],
        &["wait-for", &running, "(unclosed"],
        &["submit", &running, "x", "--wait-for", "(unclosed"],
        &["read", &running, "--since", "99999999"],
        &["info", "not-an-id!"],
        &["completions", "tcsh"],
        &["exec", "--no-such-flag", "--", "true"],
    ] {
        expect(&daemon, args, 2)?;
    }

    // 3: the session had exited, or exited first.
    for args in [
        &["send", &exited, "x"][..],
        &["resize", &exited, "80x24"],
        &["submit", &exited, "x"],
        &["wait-for", &exited, "never printed"],
    ] {
        expect(&daemon, args, 3)?;
    }

    // 124: --timeout.
    for args in [
        &["wait", &running, "--timeout", "100ms"][..],
        &["wait-for", &running, "never", "--timeout", "100ms"],
        &["wait-quiet", &running, "10s", "--timeout", "100ms"],
        &["exec", "--timeout", "100ms", "--", "sleep", "10"],
    ] {
        expect(&daemon, args, 124)?;
    }

    // 5: refused. The pool holds 3: two more sleeps fill it.
    spawn(&daemon, &["sleep", "60"])?;
    spawn(&daemon, &["sleep", "60"])?;
    expect(&daemon, &["spawn", "--", "true"], 5)?;
    expect(&daemon, &["exec", "--", "true"], 125)?;
    expect(&daemon, &["run", &running, "--", "true"], 125)?;

    // The session's own code.
    let daemon = Daemon::start(DaemonOptions::new()).await?;
    expect(&daemon, &["exec", "--", "sh", "-c", "exit 7"], 7)?;
    let seven = spawn(&daemon, &["sh", "-c", "exit 7"])?;
    expect(&daemon, &["wait", &seven], 7)?;
    expect(&daemon, &["attach", &seven], 7)?;
    let home = format!("HOME={}", daemon.dir().display());
    let out = daemon.ptyctl(["spawn", "--env", &home, "--", "bash"]).output()?;
    let bash = String::from_utf8(out.stdout)?.trim().to_string();
    expect(&daemon, &["run", &bash, "--", "(exit 6)"], 6)?;

    // 125: ptyctl or the daemon failed otherwise (nothing listens).
    let out = Command::new(ptyctl_bin()?)
        .args(["--socket", &daemon.dir().join("nobody.sock").display().to_string(), "ls"])
        .output()?;
    ensure!(out.status.code() == Some(125), "{out:?}");
    Ok(())
}

#[test]
fn the_table_is_in_the_help_and_the_readme() -> Result<()> {
    let help = Command::new(ptyctl_bin()?).arg("--help").output()?;
    let help = String::from_utf8(help.stdout)?;
    let readme = std::fs::read_to_string(ptyd_tests::workspace_root().join("README.md"))?;
    for (code, what) in [
        ("2", "usage error"),
        ("3", "the session had exited"),
        ("4", "no such session"),
        ("5", "refused"),
        ("124", "--timeout expired"),
        ("125", "ptyctl or the daemon failed"),
    ] {
        let row = format!("{code:<6} {what}");
        ensure!(help.contains(&row), "ptyctl --help lacks {row:?}:\n{help}");
        ensure!(readme.contains(&row), "README.md lacks {row:?}");
    }
    Ok(())
}
