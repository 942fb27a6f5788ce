//! The runnable examples embedded in `ipc-proto/PROTOCOL.md`, so tests can run them
//! against a real daemon and the documentation cannot drift from the wire format.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// The marker line before the Python client's code fence.
pub const PYTHON_BEGIN: &str = "<!-- python-client:begin -->";
/// The marker line after the Python client's code fence.
pub const PYTHON_END: &str = "<!-- python-client:end -->";

/// The path of `ipc-proto/PROTOCOL.md`.
pub fn protocol_md_path() -> PathBuf {
    crate::workspace_root().join("ipc-proto").join("PROTOCOL.md")
}

/// The code inside the fenced block between the `begin` and `end` marker lines of
/// `markdown` (the fence lines themselves removed).
pub fn fenced_block_between(markdown: &str, begin: &str, end: &str) -> Result<String> {
    let (_, rest) = markdown.split_once(begin).with_context(|| format!("no {begin} marker"))?;
    let (inside, _) = rest.split_once(end).with_context(|| format!("no {end} marker"))?;
    let mut lines = inside.trim().lines();
    let open = lines.next().unwrap_or_default();
    if !open.starts_with("```") {
        bail!("the block after {begin} does not start with a code fence: {open:?}");
    }
    let mut code: Vec<&str> = lines.collect();
    if code.last().map(|l| l.trim()) != Some("```") {
        bail!("the block before {end} does not end with a closing code fence");
    }
    code.pop();
    let mut out = code.join("\n");
    out.push('\n');
    Ok(out)
}

/// The Python 3 client program from `PROTOCOL.md`, ready to write to a file and run
/// with `python3 <file>` (it reads the socket path from `PTYD_SOCKET`).
pub fn python_client() -> Result<String> {
    let path = protocol_md_path();
    let md = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    fenced_block_between(&md, PYTHON_BEGIN, PYTHON_END)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_the_fenced_code() {
        let md =
            format!("intro\n{PYTHON_BEGIN}\n```python\nprint(1)\nprint(2)\n```\n{PYTHON_END}\n");
        assert_eq!(
            fenced_block_between(&md, PYTHON_BEGIN, PYTHON_END).unwrap(),
            "print(1)\nprint(2)\n"
        );
    }

    #[test]
    fn protocol_md_has_a_python_client() {
        let code = python_client().unwrap();
        assert!(code.contains("socket.AF_UNIX"), "{code}");
        assert!(code.lines().count() <= 70, "{} lines", code.lines().count());
    }
}
