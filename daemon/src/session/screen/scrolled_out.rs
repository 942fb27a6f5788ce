//! Output that scrolls out of the screen and out of the history before anyone looks need
//! not be emulated. A screen keeps its output pending (see `mod.rs`) and, before parsing
//! it, shortens it here into bytes that leave vt100 in exactly the state the whole would:
//! the same cells, attributes, wrap marks, history, cursor, pen and modes.
//!
//! The shortening looks only at *plain* stretches: printable text, CR, LF, BS, TAB, SGR
//! (`CSI … m`) and erase-in-line (`CSI … K`). Within one, nothing but cells, the cursor
//! and the pen changes, and every LF (and every wrap) advances the cursor a row or
//! scrolls. Once a stretch is sure to advance `2 × rows + history + 1` rows after some
//! point (counted from below: wraps are counted only for printable ASCII, whose width is
//! known), every row written before that point has left the screen and the history by its
//! end, whatever row the cursor started on. What the bytes before it still decide is the
//! pen (so their SGRs are kept) and the cursor's column, which a CR sets to 0 — or which,
//! inside a run of printable ASCII, is unchanged by dropping a whole number of rows.
//!
//! NULs (`dd if=/dev/zero`) do nothing in vt100 in any state, so long runs of them go.
//!
//! The caller checks what this module cannot see: that vt100 scrolls the whole screen
//! (no scroll region) and that the cut is not inside an OSC string, whose text would be
//! lost. A cut inside another string (DCS, APC, …) is harmless: vt100 ignores their
//! contents, and a cut that held an ESC (which ended the string) keeps one.

use std::ops::Range;

const ESC: u8 = 0x1b;

/// NUL bytes in a row worth a cut of their own.
const NUL_RUN: usize = 64;

/// The screen the output lands on.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geometry {
    pub(super) cols: u16,
    pub(super) rows: u16,
    /// Lines of history kept.
    pub(super) scrollback: usize,
}

impl Geometry {
    /// Rows a plain stretch must surely advance for nothing before it to survive its end:
    /// up to `rows - 1` to reach the bottom, `rows` to push the screen into the history,
    /// the history itself, and one for the partly overwritten row the stretch starts on.
    fn rows_needed(&self) -> u64 {
        2 * u64::from(self.rows) + self.scrollback as u64 + 1
    }

    /// Output that a cut can save: pending output below this is not worth scanning.
    pub(super) fn worth_cutting(&self) -> usize {
        (self.rows_needed() as usize).saturating_mul(usize::from(self.cols.max(1)))
    }
}

/// One way to shorten pending output without changing what the emulator ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cut {
    /// `at` (which ends with a CR) becomes the SGRs in it (or, without any, an erase in
    /// line if it holds an ESC), then a CR.
    BeforeCr { at: Range<usize> },
    /// `at`, inside a run of printable ASCII after its first byte, is dropped: a whole
    /// number of rows, so what follows lands in the same columns.
    WholeRows { at: Range<usize> },
    /// `at`, NUL bytes after another NUL, is dropped: vt100 ignores a NUL wherever it
    /// comes (the first of a run is kept: it may end a UTF-8 sequence).
    Nuls { at: Range<usize> },
}

impl Cut {
    /// Where the cut starts.
    pub(super) fn start(&self) -> usize {
        match self {
            Cut::BeforeCr { at } | Cut::WholeRows { at } | Cut::Nuls { at } => at.start,
        }
    }
}

/// A point in a plain stretch where a cut may end.
#[derive(Debug, Clone, Copy)]
enum Mark {
    /// Just after a CR at `at - 1`; `advanced` rows surely advanced before it. CRs within
    /// a few rows of `first` share one mark (the latest), which bounds the list.
    AfterCr { at: usize, advanced: u64, first: u64 },
    /// A run of printable ASCII; `advanced` rows surely advanced before it.
    Run { start: usize, len: usize, advanced: u64 },
}

/// How far the lexer is into an escape sequence.
#[derive(Debug, Clone, Copy)]
enum Lex {
    /// In plain text (when `plain`), or past something the stretch cannot hold.
    Text,
    /// After an ESC at `at`.
    Esc { at: usize },
    /// After `ESC [` at `at`, in digits, `;` and `:`.
    Csi { at: usize },
    /// In a sequence that is not plain: waiting for a byte that ends any CSI or ESC
    /// sequence (0x40–0x7e, but not one that after an ESC opens a CSI or a string)
    /// before text can be trusted again.
    Resync,
}

/// Rows surely advanced by `len` bytes of printable ASCII in a row: the cursor moves
/// `len` columns, whatever column it starts in.
fn run_rows(len: usize, cols: u64) -> u64 {
    (len as u64 / cols).saturating_sub(1)
}

struct Scan {
    cols: u64,
    needed: u64,
    lex: Lex,
    /// Where the current plain stretch starts, if one is open.
    start: Option<usize>,
    /// Rows surely advanced since `start`.
    advanced: u64,
    /// The current run of printable ASCII.
    run: Option<usize>,
    marks: Vec<Mark>,
    cuts: Vec<Cut>,
}

impl Scan {
    fn close_run(&mut self, end: usize) {
        if let Some(start) = self.run.take() {
            let len = end - start;
            if len as u64 > self.cols {
                self.marks.push(Mark::Run { start, len, advanced: self.advanced });
            }
            self.advanced += run_rows(len, self.cols);
        }
    }

    /// The plain stretch ends at `end`: the latest cut its rows allow, if any.
    fn end_stretch(&mut self, end: usize) {
        self.close_run(end);
        let Some(start) = self.start.take() else { return };
        let total = self.advanced;
        for mark in self.marks.drain(..).rev() {
            match mark {
                Mark::AfterCr { at, advanced, .. } if total - advanced >= self.needed => {
                    if at > start + 1 {
                        self.cuts.push(Cut::BeforeCr { at: start..at });
                    }
                    break;
                }
                Mark::AfterCr { .. } => {}
                Mark::Run { start: run, len, advanced } => {
                    let after = total - advanced - run_rows(len, self.cols);
                    // Keep `kept` bytes of the run after its first: enough rows with what
                    // follows, and the same column.
                    let short = self.needed.saturating_sub(after);
                    let kept = if short == 0 { 0 } else { (short + 1) * self.cols };
                    let rows = (len as u64 - 1).saturating_sub(kept) / self.cols;
                    if rows > 0 {
                        let from = run + 1;
                        let to = from + (rows * self.cols) as usize;
                        self.cuts.push(Cut::WholeRows { at: from..to });
                        break;
                    }
                }
            }
        }
        self.advanced = 0;
    }

    /// Something the stretch cannot hold was seen; text may be trusted from `from` on.
    fn restart(&mut self, at: usize, from: Option<usize>) {
        self.end_stretch(at);
        self.lex = match from {
            Some(_) => Lex::Text,
            None => Lex::Resync,
        };
        self.start = from;
    }
}

/// The cuts that shorten `pending` (output the emulator has not seen; it may start in the
/// middle of an escape sequence), in order. Each keeps the emulator's end state.
pub(super) fn cuts(pending: &[u8], g: Geometry) -> Vec<Cut> {
    let cols = u64::from(g.cols.max(1));
    let mut s = Scan {
        cols,
        needed: g.rows_needed(),
        // The emulator may be inside a sequence where the pending output starts.
        lex: Lex::Resync,
        start: None,
        advanced: 0,
        run: None,
        marks: Vec::new(),
        cuts: Vec::new(),
    };
    let mut nuls = Vec::new();
    let mut i = 0;
    while i < pending.len() {
        let b = pending[i];
        if b == 0 {
            // Nothing at all to vt100, in a sequence or out of one; it only breaks a run.
            let n = 1 + zero_prefix(&pending[i + 1..]);
            if n > NUL_RUN {
                nuls.push(i + 1..i + n);
            }
            if let Lex::Text = s.lex {
                s.close_run(i);
            }
            i += n;
            continue;
        }
        match s.lex {
            Lex::Resync => match b {
                ESC => s.lex = Lex::Esc { at: i },
                // After an ESC these open a sequence instead of ending one.
                b'[' | b']' | b'P' | b'X' | b'^' | b'_' => {}
                0x40..=0x7e => s.restart(i, Some(i + 1)),
                _ => {}
            },
            Lex::Esc { at } => match b {
                b'[' => s.lex = Lex::Csi { at },
                // The first ESC is dropped and a sequence starts again.
                ESC => {
                    s.restart(at, None);
                    s.lex = Lex::Esc { at: i };
                }
                0x40..=0x7e => s.restart(at, Some(i + 1)),
                _ => s.restart(at, None),
            },
            Lex::Csi { at } => match b {
                b'0'..=b'9' | b';' | b':' => {}
                // SGR and erase-in-line touch only the pen and the cursor's row.
                b'm' | b'K' if s.start.is_some() => s.lex = Lex::Text,
                0x40..=0x7e => s.restart(at, Some(i + 1)),
                _ => s.restart(at, None),
            },
            Lex::Text => match b {
                0x20..=0x7e => {
                    if s.run.is_none() {
                        s.run = Some(i);
                    }
                    // The rest of the run at once, the common case: up to the next line end
                    // or escape if all of it is printable, else as far as it is.
                    let rest = &pending[i + 1..];
                    let next = memchr::memchr3(b'\r', b'\n', ESC, rest).unwrap_or(rest.len());
                    i += if all_printable(&rest[..next]) { next } else { printable_prefix(rest) };
                }
                ESC => {
                    s.close_run(i);
                    s.lex = Lex::Esc { at: i };
                }
                b'\r' => {
                    s.close_run(i);
                    let (at, advanced) = (i + 1, s.advanced);
                    match s.marks.last_mut() {
                        Some(Mark::AfterCr { at: a, advanced: r, first })
                            if advanced < *first + 4 =>
                        {
                            (*a, *r) = (at, advanced);
                        }
                        _ => s.marks.push(Mark::AfterCr { at, advanced, first: advanced }),
                    }
                }
                b'\n' => {
                    s.close_run(i);
                    s.advanced += 1;
                }
                // Backspace and tab move within the row (a tab can even undo a pending
                // wrap); bytes of UTF-8 have a width that is not known here.
                0x08 | 0x09 | 0x7f..=0xff => s.close_run(i),
                _ => s.restart(i, Some(i + 1)),
            },
        }
        i += 1;
    }
    // A sequence still open at the end belongs to what comes next.
    let end = match s.lex {
        Lex::Esc { at } | Lex::Csi { at } => at,
        _ => pending.len(),
    };
    s.end_stretch(end);
    // NULs that a stretch's cut already removes (or overlaps) get no cut of their own.
    let mut cuts = s.cuts;
    let covered = |at: &Range<usize>| {
        cuts.iter().any(|c| match c {
            Cut::BeforeCr { at: r } | Cut::WholeRows { at: r } => {
                r.start < at.end && at.start < r.end
            }
            Cut::Nuls { .. } => false,
        })
    };
    let nuls: Vec<_> =
        nuls.into_iter().filter(|at| !covered(at)).map(|at| Cut::Nuls { at }).collect();
    cuts.extend(nuls);
    cuts.sort_by_key(Cut::start);
    cuts
}

/// How many bytes at the start of `data` are NUL.
fn zero_prefix(data: &[u8]) -> usize {
    const BLOCK: usize = 32;
    let whole = data
        .chunks_exact(BLOCK)
        .take_while(|block| block.iter().fold(true, |all, b| all & (*b == 0)))
        .count();
    let n = whole * BLOCK;
    n + data[n..].iter().take_while(|b| **b == 0).count()
}

fn printable(b: &u8) -> bool {
    b.wrapping_sub(0x20) < 0x5f
}

/// Whether all of `data` is printable ASCII: no early exit, which the compiler vectorizes.
fn all_printable(data: &[u8]) -> bool {
    data.iter().fold(true, |all, b| all & printable(b))
}

/// How many bytes at the start of `data` are printable ASCII.
fn printable_prefix(data: &[u8]) -> usize {
    const BLOCK: usize = 32;
    let whole = data.chunks_exact(BLOCK).take_while(|block| all_printable(block)).count();
    let n = whole * BLOCK;
    n + data[n..].iter().take_while(|b| printable(b)).count()
}

/// Carries out `cut` on `pending`.
pub(super) fn apply(pending: &mut Vec<u8>, cut: &Cut) {
    match cut {
        Cut::WholeRows { at } | Cut::Nuls { at } => {
            pending.drain(at.clone());
        }
        Cut::BeforeCr { at } => {
            let plain = &pending[at.clone()];
            let mut kept = sgrs(plain);
            if kept.is_empty() && plain.contains(&ESC) {
                // The cut may start inside a string (DCS, APC, …) that its first ESC
                // ended: keep one that changes nothing but a row that scrolls out.
                kept.extend_from_slice(b"\x1b[K");
            }
            kept.push(b'\r');
            pending.splice(at.clone(), kept);
        }
    }
}

/// The SGR sequences in `plain` (a plain stretch), in order, from the last one that
/// resets the pen on: the pen they leave is the one the whole leaves.
fn sgrs(plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for start in memchr::memchr_iter(ESC, plain) {
        if plain.get(start + 1) != Some(&b'[') {
            continue;
        }
        let Some(len) = plain[start + 2..].iter().position(|b| (0x40..=0x7e).contains(b)) else {
            continue;
        };
        let seq = &plain[start..start + 3 + len];
        if seq[seq.len() - 1] != b'm' {
            continue;
        }
        let params = &seq[2..seq.len() - 1];
        let first = params.split(|b| *b == b';').next().unwrap_or_default();
        if first.iter().all(|b| *b == b'0') {
            // `CSI m`, `CSI 0 m`, `CSI 0;… m`: the pen starts again from the default.
            out.clear();
        }
        out.extend_from_slice(seq);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Geometry = Geometry { cols: 10, rows: 3, scrollback: 2 };

    fn lines(n: usize, text: &str) -> Vec<u8> {
        (0..n).flat_map(|i| format!("{text}{i}\r\n").into_bytes()).collect()
    }

    #[test]
    fn a_long_stretch_of_lines_is_cut_at_a_cr_far_enough_from_its_end() {
        // 2 × 3 + 2 + 1 = 9 rows needed after the cut.
        let out = lines(20, "l");
        let cuts = cuts(&out, G);
        let [Cut::BeforeCr { at }] = &cuts[..] else { panic!("{cuts:?}") };
        // The scan trusts text only from the first letter on (the emulator may have been
        // inside a sequence), and leaves at least 9 line feeds after the cut.
        assert_eq!(at.start, 1);
        let after = out[at.end..].iter().filter(|b| **b == b'\n').count();
        assert!((9..9 + 5).contains(&after), "{after} rows after the cut");
        assert_eq!(out[at.end - 1], b'\r');
    }

    #[test]
    fn too_few_rows_or_a_cursor_move_leave_everything() {
        assert!(cuts(&lines(9, "l"), G).is_empty());
        let mut out = lines(12, "l");
        // A cursor move 5 rows before the end: the stretch after it is too short.
        let at = out.len() - 5 * 4;
        out.splice(at..at, b"\x1b[H".iter().copied());
        let cuts = cuts(&out, G);
        assert!(cuts.iter().all(|c| c.start() < at), "{cuts:?}");
    }

    #[test]
    fn a_run_without_line_ends_loses_whole_rows_only() {
        let out = vec![b'x'; 200];
        let cuts = cuts(&out, G);
        let [Cut::WholeRows { at }] = &cuts[..] else { panic!("{cuts:?}") };
        assert_eq!(at.len() % 10, 0);
        assert!(at.start >= 2);
        // What is left still advances the rows needed.
        assert!(run_rows(200 - at.end, 10) >= 9);
    }

    #[test]
    fn the_pen_survives_a_cut() {
        assert_eq!(sgrs(b"a\x1b[31mb\x1b[1mc\x1b[Kd"), b"\x1b[31m\x1b[1m");
        assert_eq!(sgrs(b"\x1b[31mb\x1b[0;4mc\x1b[7m"), b"\x1b[0;4m\x1b[7m");
        assert_eq!(sgrs(b"\x1b[31m\x1b[m"), b"\x1b[m");
    }

    #[test]
    fn printable_prefix_finds_the_first_other_byte() {
        for len in [0, 1, 31, 32, 33, 100] {
            let mut data = vec![b'a'; len];
            assert_eq!(printable_prefix(&data), len);
            data.push(b'\n');
            data.extend_from_slice(b"zz");
            assert_eq!(printable_prefix(&data), len);
        }
    }
}
