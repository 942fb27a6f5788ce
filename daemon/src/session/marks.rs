//! Semantic prompt marks (OSC 133, as terminals standardise them) in a session's output:
//! `A` a prompt starts, `B` the command line starts, `C` the command's output starts,
//! `D;<status>` the command finished with that exit status. ptyd's shell integration
//! (`shell_integration.rs`) prints them from bash and zsh; a program may print them
//! itself. An output tap follows them for the session (whether the shell has them, and
//! whether a command is running); `run` scans its own stream with [`MarkScanner`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::output::OutputTap;

/// One semantic prompt mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// A prompt is printed.
    PromptStart,
    /// The command line starts (after the prompt).
    CommandStart,
    /// The command runs: its output follows.
    OutputStart,
    /// The command finished, with this exit status when the shell said.
    Finished(Option<i32>),
}

/// Longest OSC 133 body looked at; longer ones are not marks.
const MAX_BODY: usize = 64;

/// Finds marks in output fed to it in pieces, split anywhere.
#[derive(Debug, Default, Clone)]
pub struct MarkScanner {
    state: Scan,
    body: Vec<u8>,
    /// Bytes of the sequence so far, from its ESC.
    seq: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Scan {
    #[default]
    Ground,
    Esc,
    /// After `ESC ]`.
    Osc,
    /// After `ESC ]` and an ESC inside it (an ST may follow).
    OscEsc,
}

impl MarkScanner {
    /// Feeds `data`; calls `found` with each complete mark, the index in `data` just past
    /// its terminator, and its whole length (which may have begun in earlier data).
    pub fn feed(&mut self, data: &[u8], mut found: impl FnMut(Mark, usize, usize)) {
        let mut i = 0;
        while i < data.len() {
            if self.state == Scan::Ground {
                match memchr::memchr(0x1b, &data[i..]) {
                    Some(n) => i += n,
                    None => return,
                }
            }
            let b = data[i];
            i += 1;
            self.seq = if b == 0x1b && matches!(self.state, Scan::Ground | Scan::Esc) {
                1
            } else {
                self.seq.saturating_add(1)
            };
            self.state = match (self.state, b) {
                (Scan::Ground, 0x1b) => Scan::Esc,
                (Scan::Ground, _) => Scan::Ground,
                (Scan::Esc, b']') => {
                    self.body.clear();
                    Scan::Osc
                }
                (Scan::Esc, 0x1b) => Scan::Esc,
                (Scan::Esc, _) => Scan::Ground,
                (Scan::Osc, 0x07) => {
                    self.finish(i, &mut found);
                    Scan::Ground
                }
                (Scan::Osc, 0x1b) => Scan::OscEsc,
                (Scan::Osc, 0x18 | 0x1a) => Scan::Ground,
                (Scan::Osc, b) => {
                    if self.body.len() <= MAX_BODY {
                        self.body.push(b);
                    }
                    Scan::Osc
                }
                (Scan::OscEsc, b'\\') => {
                    self.finish(i, &mut found);
                    Scan::Ground
                }
                (Scan::OscEsc, b']') => {
                    self.body.clear();
                    Scan::Osc
                }
                (Scan::OscEsc, 0x1b) => Scan::Esc,
                (Scan::OscEsc, _) => Scan::Ground,
            };
        }
    }

    fn finish(&mut self, at: usize, found: &mut impl FnMut(Mark, usize, usize)) {
        if let Some(mark) = parse(&self.body).filter(|_| self.body.len() <= MAX_BODY) {
            found(mark, at, self.seq);
        }
        self.body.clear();
    }
}

/// The mark an OSC body (`133;D;0`) names, if it is one.
fn parse(body: &[u8]) -> Option<Mark> {
    let rest = body.strip_prefix(b"133;")?;
    let mut fields = rest.split(|b| *b == b';');
    let kind = fields.next()?;
    Some(match kind {
        b"A" => Mark::PromptStart,
        b"B" => Mark::CommandStart,
        b"C" => Mark::OutputStart,
        b"D" => {
            let status = fields.next().and_then(|s| std::str::from_utf8(s).ok()?.parse().ok());
            Mark::Finished(status)
        }
        _ => return None,
    })
}

/// Where a session's shell stands, as its marks tell.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ShellState {
    /// No mark seen yet: no shell integration, or the shell has not started.
    #[default]
    Unmarked,
    /// At a prompt (a command finished, or a prompt was printed).
    AtPrompt,
    /// A command's output started and it has not finished.
    Running,
}

#[derive(Debug, Default)]
struct State {
    scanner: MarkScanner,
    shell: ShellState,
}

/// The output tap that follows a session's marks.
#[derive(Debug, Default)]
pub struct PromptMarks {
    state: Mutex<State>,
    /// A `run` is typing into the shell or waiting for it.
    claimed: AtomicBool,
}

/// The right to type a command into the shell, until dropped: one `run` at a time.
#[derive(Debug)]
pub struct RunClaim(Arc<PromptMarks>);

impl Drop for RunClaim {
    fn drop(&mut self) {
        self.0.claimed.store(false, Ordering::Release);
    }
}

impl PromptMarks {
    /// Marks that start where a session that crossed from another daemon image stood.
    pub fn restore(shell: ShellState) -> PromptMarks {
        PromptMarks { state: Mutex::new(State { shell, ..State::default() }), ..Default::default() }
    }

    /// Where the shell stands now.
    pub fn shell(&self) -> ShellState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).shell
    }

    /// The shell for one `run`, unless another has it.
    pub fn claim(self: &Arc<Self>) -> Option<RunClaim> {
        let free = self.claimed.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire);
        free.is_ok().then(|| RunClaim(self.clone()))
    }
}

impl OutputTap for PromptMarks {
    fn observe(&self, _offset: u64, data: &[u8]) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let State { scanner, shell } = &mut *st;
        scanner.feed(data, |mark, _, _| {
            *shell = match mark {
                Mark::OutputStart => ShellState::Running,
                Mark::PromptStart | Mark::CommandStart | Mark::Finished(_) => ShellState::AtPrompt,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(pieces: &[&[u8]]) -> Vec<(Mark, usize)> {
        let mut scanner = MarkScanner::default();
        let mut out = Vec::new();
        for piece in pieces {
            scanner.feed(piece, |m, at, _| out.push((m, at)));
        }
        out
    }

    #[test]
    fn marks_are_found_with_either_terminator_and_split_anywhere() {
        let out = b"\x1b]133;D;0\x07\x1b]133;A\x07$ \x1b]133;B\x07ls\r\n\x1b]133;C\x1b\\files\r\n\x1b]133;D;130\x07";
        let want = [
            Mark::Finished(Some(0)),
            Mark::PromptStart,
            Mark::CommandStart,
            Mark::OutputStart,
            Mark::Finished(Some(130)),
        ];
        let whole: Vec<_> = marks(&[out]).into_iter().map(|(m, _)| m).collect();
        assert_eq!(whole, want);
        for split in 1..out.len() {
            let parts: Vec<_> =
                marks(&[&out[..split], &out[split..]]).into_iter().map(|(m, _)| m).collect();
            assert_eq!(parts, want, "split at {split}");
        }
        // The index is just past the terminator: what follows a C is the output.
        let (_, at) = marks(&[b"x\x1b]133;C\x07out"])[0];
        assert_eq!(at, 9);
        // The length counts from the ESC, across pieces, to the end of the terminator.
        let mut scanner = MarkScanner::default();
        let mut lens = Vec::new();
        for piece in [&b"ab\x1b\x1b]13"[..], b"3;D;7\x1b", b"\\z"] {
            scanner.feed(piece, |_, _, len| lens.push(len));
        }
        assert_eq!(lens, [b"\x1b]133;D;7\x1b\\".len()]);
    }

    #[test]
    fn other_oscs_and_garbage_are_not_marks() {
        assert!(marks(&[b"\x1b]0;title\x07\x1b]133;Z\x07\x1b]1339;A\x07\x1b]133;A"]).is_empty());
        let long = [b"\x1b]133;D;".as_slice(), &[b'9'; 200], b"\x07"].concat();
        assert!(marks(&[&long]).is_empty());
        assert_eq!(marks(&[b"\x1b]133;D\x07"])[0].0, Mark::Finished(None));
    }

    #[test]
    fn the_tap_follows_the_shell() {
        let t = PromptMarks::default();
        assert_eq!(t.shell(), ShellState::Unmarked);
        t.observe(0, b"\x1b]133;A\x07$ ");
        assert_eq!(t.shell(), ShellState::AtPrompt);
        t.observe(0, b"sleep 9\r\n\x1b]133;C\x07");
        assert_eq!(t.shell(), ShellState::Running);
        t.observe(0, b"\x1b]133;D;0\x07");
        assert_eq!(t.shell(), ShellState::AtPrompt);
    }
}
