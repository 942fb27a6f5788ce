//! `ptyctl completions SHELL` and `ptyctl man` are generated from ptyctl's own command
//! definition, so they know every subcommand and flag; the shells accept the scripts.

use std::process::Command;

use anyhow::{ensure, Context, Result};
use ptyd_tests::ptyctl_bin;

fn ptyctl(args: &[&str]) -> Result<String> {
    let out = Command::new(ptyctl_bin()?).args(args).output().context("run ptyctl")?;
    ensure!(out.status.success(), "ptyctl {args:?}: {out:?}");
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn completions_know_every_subcommand_and_the_shells_load_them() -> Result<()> {
    for shell in ["bash", "zsh", "fish"] {
        let script = ptyctl(&["completions", shell])?;
        let flags: &[&str] =
            if shell == "fish" { &["-l plain", "-l timeout"] } else { &["--plain", "--timeout"] };
        for word in ["run", "wait-for", "completions"].iter().chain(flags) {
            ensure!(script.contains(word), "{shell} completions lack {word}");
        }
        // The shell itself parses the script (fish is rarely installed: skipped then).
        let check = match shell {
            "bash" => Some(("bash", vec!["-n"])),
            "zsh" => Some(("zsh", vec!["-n"])),
            _ => None,
        };
        if let Some((program, args)) = check {
            let dir = tempfile_dir()?;
            let path = dir.join(shell);
            std::fs::write(&path, &script)?;
            let out = Command::new(program).args(&args).arg(&path).output();
            match out {
                Ok(out) => ensure!(out.status.success(), "{program} rejects the script: {out:?}"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            std::fs::remove_dir_all(dir)?;
        }
    }
    let err = Command::new(ptyctl_bin()?).args(["completions", "tcsh"]).output()?;
    ensure!(err.status.code() == Some(2), "an unknown shell is a usage error: {err:?}");
    Ok(())
}

#[test]
fn the_man_page_is_roff_naming_the_subcommands() -> Result<()> {
    let page = ptyctl(&["man"])?;
    ensure!(page.contains(".TH ptyctl 1"), "{page}");
    for sub in ["spawn", "run", "exec", "wait\\-for", "completions"] {
        ensure!(page.contains(sub), "the man page lacks {sub}");
    }
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("ptyctl-completions-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
