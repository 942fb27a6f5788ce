//! The screen a session shows, kept by a terminal emulator (the `vt100` crate) that
//! follows the session's output from byte 0 and its size: an output tap. It answers
//! nothing to the program (device-attribute or cursor-position queries produce no input),
//! and its memory is bounded by the size and the scrollback lines, whatever is printed.
//!
//! A [`Snapshot`] is the screen at one output offset: its text (what `ptyctl screen`
//! prints), its cursor, title and modes, and a byte stream that, written into a fresh
//! terminal of the same size, reproduces it: the main screen (with scrollback when asked)
//! painted first, then the alternate screen if a program has it up, then the modes.
//!
//! Output is not parsed as it arrives: it waits in the screen until someone looks (a
//! snapshot, the text, a resize), until the session has been quiet for a moment (the
//! flusher thread parses it then, off the session's reader thread), or until there is
//! enough of it to shorten (`scrolled_out`: what would scroll out of the history unseen
//! is dropped, keeping the emulator's end state), so a `cat` of a large file is not
//! emulated byte by byte.

mod flusher;
mod scrolled_out;
mod sequences;

use std::mem;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use self::scrolled_out::Geometry;
use self::sequences::{Osc, Trackers};
use super::output::OutputTap;

/// Least output held back before it is shortened or parsed on the reader thread; more
/// is held for screens whose history needs more output to scroll out (`State::high`).
const HIGH_FLOOR: usize = 256 * 1024;

/// Most output a screen holds back, whatever its size and history.
const HIGH_CEILING: usize = 8 * 1024 * 1024;

/// How long a session is quiet before the flusher parses what its screen holds back.
const QUIET: Duration = Duration::from_millis(20);

/// Longest window title kept.
const MAX_TITLE: usize = 1024;

/// Modes and state vt100 leaves to its caller, followed from the output.
#[derive(Debug, Default, Clone)]
struct Extras {
    title: String,
    focus_events: bool,
    /// DECSCUSR shape (`CSI Ps SP q`); 0 is the terminal's default.
    cursor_shape: u16,
    /// DECAWM off (`CSI ? 7 l`), which the emulator does not apply but a viewer must.
    autowrap_off: bool,
}

impl vt100::Callbacks for Extras {
    fn set_window_title(&mut self, _: &mut vt100::Screen, title: &[u8]) {
        let title = String::from_utf8_lossy(&title[..title.len().min(MAX_TITLE)]);
        self.title = title.into_owned();
    }

    fn unhandled_csi(
        &mut self,
        _: &mut vt100::Screen,
        i1: Option<u8>,
        _i2: Option<u8>,
        params: &[&[u16]],
        c: char,
    ) {
        match (i1, params, c) {
            (Some(b'?'), [[1004]], 'h') => self.focus_events = true,
            (Some(b'?'), [[1004]], 'l') => self.focus_events = false,
            (Some(b'?'), [[7]], 'h') => self.autowrap_off = false,
            (Some(b'?'), [[7]], 'l') => self.autowrap_off = true,
            (Some(b' '), [[shape]], 'q') => self.cursor_shape = *shape,
            (Some(b' '), [], 'q') => self.cursor_shape = 0,
            _ => {}
        }
    }
}

/// Whether held-back output may be shortened before it is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    /// Drop what scrolls out unseen (`scrolled_out`).
    Shorten,
    /// Parse every byte: the reference the shortening is tested against.
    #[cfg(test)]
    Exact,
}

/// Output received but not parsed yet: the output offsets `[State::offset, end)`.
struct Pending {
    bytes: Vec<u8>,
    end: u64,
    /// When the last of it arrived.
    last: Instant,
    /// Queued with the flusher.
    scheduled: bool,
}

/// What becomes of the pending buffer's memory once it is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Memory {
    /// Kept for more output: the session is busy.
    Keep,
    /// Given back: the session is quiet.
    Release,
}

struct State {
    parser: vt100::Parser<Extras>,
    trackers: Trackers,
    /// The output offset the screen reflects: every byte before it has been processed.
    offset: u64,
    scrollback: usize,
    pending: Pending,
    feed: Feed,
    /// Output bytes given to the emulator, after shortening.
    parsed: u64,
    /// A fixed [`State::high`], for tests.
    high_fixed: Option<usize>,
}

impl State {
    fn geometry(&self) -> Geometry {
        let (rows, cols) = self.parser.screen().size();
        Geometry { cols, rows, scrollback: self.scrollback }
    }

    /// Pending output past which it is shortened, and parsed if it stays past 3/4 of it:
    /// room for twice what a cut must leave, so that most cuts save something.
    fn high(&self) -> usize {
        let fit = 2 * self.geometry().worth_cutting() + 64 * 1024;
        self.high_fixed.unwrap_or(fit.clamp(HIGH_FLOOR, HIGH_CEILING))
    }

    /// Drops from the pending output what would scroll out of the history unseen.
    fn shorten(&mut self) {
        if self.feed != Feed::Shorten {
            return;
        }
        let cuts = scrolled_out::cuts(&self.pending.bytes, self.geometry());
        // What the module cannot see: the cut must not be inside an OSC string (its text
        // would be lost) and vt100 must scroll the whole screen (no region).
        let mut trackers = self.trackers;
        let mut seen = 0;
        let allowed: Vec<_> = cuts
            .into_iter()
            .filter(|cut| {
                trackers.follow(&self.pending.bytes[seen..cut.start()]);
                seen = cut.start();
                trackers.osc == Osc::Ground && trackers.margins.scrolls_whole_screen()
            })
            .collect();
        for cut in allowed.iter().rev() {
            scrolled_out::apply(&mut self.pending.bytes, cut);
        }
    }

    /// Parses all pending output.
    fn flush(&mut self, memory: Memory) {
        if self.pending.bytes.is_empty() {
            self.offset = self.pending.end;
            return;
        }
        if self.pending.bytes.len() >= self.geometry().worth_cutting() {
            self.shorten();
        }
        let mut bytes = mem::take(&mut self.pending.bytes);
        let parser = &mut self.parser;
        self.trackers.filter(&bytes, |run| parser.process(run));
        self.parsed += bytes.len() as u64;
        self.offset = self.pending.end;
        if memory == Memory::Keep {
            bytes.clear();
            self.pending.bytes = bytes;
        }
    }
}

/// A session's screen.
pub struct Screen {
    state: Mutex<State>,
    /// This screen, for the flusher.
    me: Weak<Screen>,
}

/// Which buffer a program shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buffer {
    /// The normal screen, with scrollback.
    Main,
    /// The alternate screen (`?1049h` and friends: vim, top, less).
    Alternate,
}

/// The screen at one output offset.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Every output byte before this offset is reflected, none after.
    pub offset: u64,
    /// Size.
    pub cols: u16,
    /// Size.
    pub rows: u16,
    /// Cursor row and column, from 0.
    pub cursor: (u16, u16),
    /// Whether the cursor is shown.
    pub cursor_visible: bool,
    /// The window title (OSC 0/2).
    pub title: String,
    /// The buffer shown.
    pub buffer: Buffer,
    /// Text of the shown screen, one string per row, trailing blanks trimmed; preceded by
    /// up to the asked number of scrollback lines of the main screen.
    pub lines: Vec<String>,
    /// How many of `lines` are scrollback.
    pub scrollback_lines: usize,
    /// Bytes that reproduce the screen in a fresh terminal of this size.
    pub ansi: Vec<u8>,
}

impl Screen {
    /// A blank screen of `cols` × `rows` keeping `scrollback` lines of history.
    pub fn new(cols: u16, rows: u16, scrollback: usize) -> Arc<Screen> {
        Screen::build(cols, rows, scrollback, Feed::Shorten, None)
    }

    /// A screen of `cols` × `rows` showing what `ansi` (a [`Snapshot`]'s bytes) draws, as
    /// of output offset `offset`: a session's screen carried into a new daemon image.
    pub fn restore(
        cols: u16,
        rows: u16,
        scrollback: usize,
        ansi: &[u8],
        offset: u64,
    ) -> Arc<Screen> {
        let screen = Screen::new(cols, rows, scrollback);
        {
            let mut st = screen.state();
            let State { parser, trackers, .. } = &mut *st;
            trackers.filter(ansi, |run| parser.process(run));
            st.offset = offset;
            st.pending.end = offset;
        }
        screen
    }

    fn build(
        cols: u16,
        rows: u16,
        scrollback: usize,
        feed: Feed,
        high_fixed: Option<usize>,
    ) -> Arc<Screen> {
        let parser = vt100::Parser::new_with_callbacks(rows, cols, scrollback, Extras::default());
        let pending = Pending { bytes: Vec::new(), end: 0, last: Instant::now(), scheduled: false };
        let state = State {
            parser,
            trackers: Trackers::new(rows),
            offset: 0,
            scrollback,
            pending,
            feed,
            parsed: 0,
            high_fixed,
        };
        Arc::new_cyclic(|me| Screen { state: Mutex::new(state), me: me.clone() })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state with every byte received so far parsed.
    fn current(&self) -> MutexGuard<'_, State> {
        let mut st = self.state();
        st.flush(Memory::Keep);
        st
    }

    /// Parses what is held back if the session has been quiet for `quiet`; true when
    /// nothing is held back any more (the flusher may forget this screen).
    fn flush_if_quiet(&self, quiet: Duration) -> bool {
        let mut st = self.state();
        if !st.pending.bytes.is_empty() && st.pending.last.elapsed() < quiet {
            return false;
        }
        st.flush(Memory::Release);
        st.pending.bytes = Vec::new();
        st.pending.scheduled = false;
        true
    }

    /// Follows the terminal's new size. The output before it was written for the old one.
    pub fn resize(&self, cols: u16, rows: u16) {
        let mut st = self.current();
        st.parser.screen_mut().set_size(rows, cols);
        st.trackers.margins.resize(rows);
    }

    /// The offset the screen reflects: all output received so far.
    pub fn offset(&self) -> u64 {
        self.current().offset
    }

    /// The rows of the screen shown, trailing blanks trimmed, and the offset they reflect:
    /// cheaper than a snapshot, for matching.
    pub fn text(&self) -> (u64, Vec<String>) {
        let st = self.current();
        let screen = st.parser.screen();
        let (_, cols) = screen.size();
        (st.offset, screen.rows(0, cols).map(|r| r.trim_end().to_string()).collect())
    }

    /// The screen now, with up to `scrollback` lines of main-screen history.
    pub fn snapshot(&self, scrollback: usize) -> Snapshot {
        // Copied under the lock, built after it: the session's reader thread waits on this
        // lock to feed the screen, and must not wait for a snapshot to be serialized.
        let (copy, extras, margins, offset, kept) = {
            let st = self.current();
            let copy = st.parser.screen().clone();
            let margins = st.trackers.margins;
            (copy, st.parser.callbacks().clone(), margins, st.offset, st.scrollback)
        };
        let extras = &extras;
        let (rows, cols) = copy.size();
        let buffer = if copy.alternate_screen() { Buffer::Alternate } else { Buffer::Main };
        // The main screen: the copy itself, or (under an alternate screen) the copy once it
        // has left the alternate screen, which vt100 keeps but does not show.
        let mut main = vt100::Parser::new(rows, cols, kept);
        *main.screen_mut() = copy;
        let alternate = (buffer == Buffer::Alternate).then(|| {
            let alternate = main.screen().clone();
            main.process(b"\x1b[?1049l");
            alternate
        });
        let history = history(&mut main, scrollback);
        // The screen shown, for its contents, cursor and modes.
        let screen = alternate.as_ref().unwrap_or(main.screen());
        let mut ansi = Vec::new();
        // A known start: main screen, default attributes, cursor home, screen cleared.
        ansi.extend_from_slice(b"\x1b[?1049l\x1b[m\x1b[H\x1b[2J");
        for line in &history.formatted {
            ansi.extend_from_slice(line);
            ansi.extend_from_slice(b"\x1b[m\r\n");
        }
        if !history.formatted.is_empty() {
            // Newlines at the bottom push lines into the scrollback in every terminal; scroll
            // until the last history line has left the screen, then start it blank.
            for _ in 1..rows {
                ansi.extend_from_slice(b"\r\n");
            }
            ansi.extend_from_slice(b"\x1b[H\x1b[2J");
        }
        ansi.extend(main.screen().contents_formatted());
        ansi.extend(main.screen().cursor_state_formatted());
        if buffer == Buffer::Alternate {
            ansi.extend_from_slice(b"\x1b[?1049h\x1b[m\x1b[H\x1b[2J");
            ansi.extend(screen.contents_formatted());
            ansi.extend(screen.cursor_state_formatted());
        }
        // The scroll region and origin mode (which home the cursor, so it is placed again).
        let region =
            margins.region.map(|(top, bottom)| (top, bottom.min(rows))).filter(|(t, b)| t < b);
        if let Some((top, bottom)) = region {
            ansi.extend_from_slice(format!("\x1b[{top};{bottom}r").as_bytes());
        }
        if margins.origin {
            ansi.extend_from_slice(b"\x1b[?6h");
        }
        if region.is_some() || margins.origin {
            let (row, col) = screen.cursor_position();
            let top = if margins.origin { region.map_or(1, |(t, _)| t) } else { 1 };
            let row = (row + 1).saturating_sub(top - 1).max(1);
            ansi.extend_from_slice(format!("\x1b[{row};{}H", col + 1).as_bytes());
        }
        if extras.autowrap_off {
            ansi.extend_from_slice(b"\x1b[?7l");
        }
        ansi.extend(screen.attributes_formatted());
        ansi.extend(screen.input_mode_formatted());
        if extras.focus_events {
            ansi.extend_from_slice(b"\x1b[?1004h");
        }
        if extras.cursor_shape != 0 {
            ansi.extend_from_slice(format!("\x1b[{} q", extras.cursor_shape).as_bytes());
        }
        if !extras.title.is_empty() {
            ansi.extend_from_slice(format!("\x1b]2;{}\x07", printable(&extras.title)).as_bytes());
        }
        let mut lines = history.text;
        let scrollback_lines = lines.len();
        lines.extend(screen.rows(0, cols).map(|r| r.trim_end().to_string()));
        Snapshot {
            offset,
            cols,
            rows,
            cursor: screen.cursor_position(),
            cursor_visible: !screen.hide_cursor(),
            title: extras.title.clone(),
            buffer,
            lines,
            scrollback_lines,
            ansi,
        }
    }
}

impl OutputTap for Screen {
    fn observe(&self, offset: u64, data: &[u8]) {
        let mut st = self.state();
        st.pending.bytes.extend_from_slice(data);
        st.pending.end = offset + data.len() as u64;
        st.pending.last = Instant::now();
        let high = st.high();
        if st.pending.bytes.len() >= high {
            st.shorten();
            if st.pending.bytes.len() >= high / 4 * 3 {
                // Output that does not shorten (a TUI redrawing) is parsed here, which
                // bounds the memory and slows the program to the emulator's pace; a few
                // ms of parsing, so the runtime's other tasks move to another worker.
                blocking(|| st.flush(Memory::Keep));
            }
        }
        if !st.pending.bytes.is_empty() && !st.pending.scheduled {
            st.pending.scheduled = flusher::schedule(self.me.clone());
        }
    }
}

/// Runs `f`, which blocks for a while, telling a multi-threaded runtime first (when it is
/// called from one: the session's output task) so that its other tasks are not held up.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) if rt.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Scrollback lines of `main`, oldest first, as text and as formatted bytes.
struct History {
    text: Vec<String>,
    formatted: Vec<Vec<u8>>,
}

fn history(main: &mut vt100::Parser, want: usize) -> History {
    let (rows, cols) = main.screen().size();
    let mut out = History { text: Vec::new(), formatted: Vec::new() };
    if want == 0 {
        return out;
    }
    // vt100 shows history by scrolling its view back; the screen's first row at view
    // offset `n` is history line `len - n` (counting from the oldest).
    main.screen_mut().set_scrollback(usize::MAX);
    let len = main.screen().scrollback();
    let take = want.min(len);
    let mut back = take;
    while back > 0 {
        main.screen_mut().set_scrollback(back);
        let n = back.min(rows as usize);
        let screen = main.screen();
        out.text.extend(screen.rows(0, cols).take(n).map(|r| r.trim_end().to_string()));
        out.formatted.extend(screen.rows_formatted(0, cols).take(n));
        back -= n;
    }
    main.screen_mut().set_scrollback(0);
    out
}

/// A title safe to put back into an OSC: no control characters.
fn printable(title: &str) -> String {
    title.chars().filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::sequences::MAX_OSC;
    use super::*;

    fn fed(cols: u16, rows: u16, bytes: &[u8]) -> Arc<Screen> {
        let s = Screen::new(cols, rows, 100);
        s.observe(0, bytes);
        s
    }

    /// Feeds `snap`'s bytes into a fresh emulator of its size.
    fn replay(snap: &Snapshot) -> vt100::Parser<Extras> {
        let mut p = vt100::Parser::new_with_callbacks(snap.rows, snap.cols, 100, Extras::default());
        p.process(&snap.ansi);
        p
    }

    fn same_cells(a: &vt100::Screen, b: &vt100::Screen) {
        let (rows, cols) = a.size();
        assert_eq!(a.size(), b.size());
        for r in 0..rows {
            for c in 0..cols {
                let (x, y) = (a.cell(r, c).unwrap(), b.cell(r, c).unwrap());
                assert_eq!(x.contents(), y.contents(), "text at {r},{c}");
                assert_eq!(
                    (x.fgcolor(), x.bgcolor(), x.bold(), x.italic(), x.underline(), x.inverse()),
                    (y.fgcolor(), y.bgcolor(), y.bold(), y.italic(), y.underline(), y.inverse()),
                    "attributes at {r},{c}"
                );
            }
        }
        assert_eq!(a.cursor_position(), b.cursor_position(), "cursor");
        assert_eq!(a.hide_cursor(), b.hide_cursor(), "cursor visibility");
        assert_eq!(a.alternate_screen(), b.alternate_screen(), "buffer");
        assert_eq!(a.application_cursor(), b.application_cursor(), "cursor keys");
        assert_eq!(a.application_keypad(), b.application_keypad(), "keypad");
        assert_eq!(a.bracketed_paste(), b.bracketed_paste(), "bracketed paste");
        assert_eq!(a.mouse_protocol_mode(), b.mouse_protocol_mode(), "mouse mode");
        assert_eq!(a.mouse_protocol_encoding(), b.mouse_protocol_encoding(), "mouse encoding");
    }

    #[test]
    fn text_cursor_and_colours_round_trip() {
        let s = fed(20, 5, b"plain\r\n\x1b[1;31mbold red\x1b[m \x1b[38;5;200mx\x1b[48;2;1;2;3my\x1b[m\r\n\xe6\xbc\xa2\xe5\xad\x97 wide\x1b[3;7H");
        let snap = s.snapshot(0);
        assert_eq!(snap.lines[..3], ["plain", "bold red xy", "漢字 wide"]);
        assert_eq!(snap.cursor, (2, 6));
        same_cells(s.current().parser.screen(), replay(&snap).screen());
    }

    #[test]
    fn the_alternate_screen_keeps_the_main_one_underneath_and_modes_survive() {
        let s = fed(
            10,
            3,
            b"shell $\x1b[?1049h\x1b[?1h\x1b=\x1b[?2004h\x1b[?1002h\x1b[?1006h\x1b[?1004h\x1b[5 q\x1b]2;vim\x07\x1b[Hvim!\x1b[?25l",
        );
        let snap = s.snapshot(0);
        assert_eq!(snap.buffer, Buffer::Alternate);
        assert_eq!(snap.title, "vim");
        assert_eq!(snap.lines[0], "vim!");
        assert!(!snap.cursor_visible);
        let mut fresh = replay(&snap);
        same_cells(s.current().parser.screen(), fresh.screen());
        let extras = fresh.callbacks();
        assert!(extras.focus_events);
        assert_eq!(extras.cursor_shape, 5);
        assert_eq!(extras.title, "vim");
        // Leaving the alternate screen shows the main screen as it was.
        fresh.process(b"\x1b[?1049l");
        assert_eq!(fresh.screen().rows(0, 10).next().unwrap().trim_end(), "shell $");
    }

    #[test]
    fn scrollback_comes_first_and_the_screen_after() {
        let mut out = Vec::new();
        for i in 0..10 {
            out.extend_from_slice(format!("line {i}\r\n").as_bytes());
        }
        let s = fed(10, 3, &out);
        let snap = s.snapshot(5);
        assert_eq!(snap.scrollback_lines, 5);
        assert_eq!(
            snap.lines,
            ["line 3", "line 4", "line 5", "line 6", "line 7", "line 8", "line 9", ""]
        );
        let fresh = replay(&snap);
        same_cells(s.current().parser.screen(), fresh.screen());
    }

    #[test]
    fn a_scroll_region_and_origin_mode_behave_the_same_after_a_snapshot() {
        for setup in [
            &b"top\r\nmid\r\n\x1b[2;4r\x1b[3;1Hin region"[..],
            b"a\r\nb\x1b[2;5r\x1b[?6h\x1b[2;3Horigin",
            b"\x1b[3r\x1b[5;1Hbottom part",
        ] {
            let s = fed(20, 6, setup);
            let snap = s.snapshot(0);
            let mut b = replay(&snap);
            same_cells(s.current().parser.screen(), b.screen());
            // What follows lands in the same place in both: the margins crossed over.
            let more = b"\r\n1\r\n2\r\n3\r\n4\x1b[1;1HH\x1b[99;1HB";
            s.observe(setup.len() as u64, more);
            b.process(more);
            same_cells(s.current().parser.screen(), b.screen());
        }
        // A soft reset, a full reset and a resize clear them.
        for reset in [&b"\x1b[!p"[..], b"\x1bc"] {
            let s = fed(20, 6, b"\x1b[2;4r\x1b[?6h");
            s.observe(0, reset);
            let snap = s.snapshot(0);
            assert!(!String::from_utf8_lossy(&snap.ansi).contains("\x1b[2;4r"), "{reset:?}");
            assert!(!String::from_utf8_lossy(&snap.ansi).contains("\x1b[?6h"), "{reset:?}");
        }
        let s = fed(20, 6, b"\x1b[2;4r\x1b[?7l");
        s.resize(30, 8);
        let text = String::from_utf8_lossy(&s.snapshot(0).ansi).into_owned();
        assert!(!text.contains("\x1b[2;4r") && text.contains("\x1b[?7l"), "{text:?}");
    }

    #[test]
    fn an_endless_osc_is_cut_and_skipped_to_its_end() {
        let s = Screen::new(20, 3, 0);
        let mut out = b"\x1b]2;".to_vec();
        out.extend(std::iter::repeat_n(b'x', MAX_OSC * 3));
        out.extend_from_slice(b"\x1b\\ok\x1b]0;short\x07!");
        s.observe(0, &out);
        let snap = s.snapshot(0);
        assert_eq!(snap.title, "short");
        assert_eq!(snap.lines[0], "ok!");
        assert_eq!(s.current().trackers.osc, Osc::Ground);
    }

    #[test]
    fn garbage_never_panics_and_titles_stay_bounded() {
        let s = Screen::new(80, 24, 10);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut buf = vec![0u8; 64 * 1024];
        for round in 0..32 {
            for b in buf.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            s.observe(round * buf.len() as u64, &buf);
        }
        s.observe(0, b"\x1b[99999999999999999999;99999999999Hx\x1b[999999999999999999@");
        let mut osc = b"\x1b]2;".to_vec();
        osc.extend(std::iter::repeat_n(b'a', 1 << 20));
        s.observe(0, &osc);
        s.observe(0, b"\x07\x1b[Hafter");
        let mut combining = b"e".to_vec();
        for _ in 0..100_000 {
            combining.extend_from_slice("\u{301}".as_bytes());
        }
        s.observe(0, &combining);
        let snap = s.snapshot(10);
        assert!(snap.title.len() <= MAX_TITLE);
        assert_eq!(s.current().trackers.osc, Osc::Ground, "the OSC was skipped to its end");
        assert!(snap.ansi.len() < 4 << 20, "snapshot of {} bytes", snap.ansi.len());
    }

    /// A small random generator: the tests must be repeatable.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Output that is mostly plain (the shortening's case), with a little of everything
    /// it must not cut across: cursor moves, regions, the alternate screen, strings.
    fn program_output(rng: &mut Rng, len: usize, rare: u64) -> Vec<u8> {
        const OTHER: &[&[u8]] = &[
            b"\x1b[H",
            b"\x1b[2J",
            b"\x1b[2;3r",
            b"\x1b[r",
            b"\x1b[?1049h",
            b"\x1b[?1049l",
            b"\x1b]2;a title\x07",
            b"\x1b]2;a title left open ",
            b"\x1bP1;2qsixel-ish data",
            b"\x1b\\",
            b"\x1bM",
            b"\x1b7",
            b"\x1b8",
            b"\x1b[5A",
            b"\x1b[3;7H",
            b"\x07",
            b"\x1b(B",
            b"\x1b[?25l",
            b"\x1b[?7l",
            b"\x1b\x1b[2J",
            b"\x1b[4h",
            b"\x1bc",
        ];
        let mut out = Vec::new();
        while out.len() < len {
            match rng.below(100) {
                n if n < rare => {
                    out.extend_from_slice(OTHER[rng.below(OTHER.len() as u64) as usize])
                }
                n if n < 40 => {
                    let long = rng.below(8) == 0;
                    let run = rng.below(if long { 300 } else { 25 });
                    out.extend((0..run).map(|_| b' ' + rng.below(95) as u8));
                }
                n if n < 60 => out.extend_from_slice(b"\r\n"),
                n if n < 64 => out.push(b'\n'),
                n if n < 68 => out.push(b'\r'),
                n if n < 76 => {
                    let sgr = ["", "0", "1", "4;31", "7", "38;5;200", "48;2;1;2;3", "0;32", "22"];
                    let p = sgr[rng.below(sgr.len() as u64) as usize];
                    out.extend_from_slice(format!("\x1b[{p}m").as_bytes());
                }
                n if n < 79 => out.extend_from_slice(b"\x1b[K"),
                n if n < 85 => {
                    let text = ["é", "中文", "e\u{301}", "\u{1f600}"];
                    out.extend_from_slice(text[rng.below(text.len() as u64) as usize].as_bytes());
                }
                n if n < 88 => out.push(b'\t'),
                n if n < 90 => out.push(0x08),
                n if n < 92 => out.extend(std::iter::repeat_n(0, rng.below(200) as usize)),
                n if n < 93 => out.extend_from_slice(b"\xc3\0\0\0\xa9"),
                _ => out.extend_from_slice(b"$ "),
            }
        }
        out
    }

    /// Everything a viewer could see of a screen, history included.
    fn seen(s: &Screen) -> (Vec<u8>, Vec<String>, (u16, u16), String, u64) {
        let snap = s.snapshot(usize::MAX);
        (snap.ansi, snap.lines, snap.cursor, snap.title, snap.offset)
    }

    #[test]
    fn shortened_output_leaves_the_screen_exactly_as_all_of_it_would() {
        let mut cut_away = 0;
        for seed in 1..=300u64 {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491));
            let (cols, rows, history) = match seed % 3 {
                0 => (10, 3, 4),
                1 => (7, 2, 0),
                _ => (20, 5, 10),
            };
            let rare = [0, 1, 3][(seed % 3) as usize];
            let out = program_output(&mut rng, 40_000, rare);
            let high = Some([400, 3000][(seed % 2) as usize]);
            let short = Screen::build(cols, rows, history, Feed::Shorten, high);
            let exact = Screen::build(cols, rows, history, Feed::Exact, high);
            let mut offset = 0;
            let mut rest = &out[..];
            while !rest.is_empty() {
                let n = (1 + rng.below(700) as usize).min(rest.len());
                let (chunk, more) = rest.split_at(n);
                short.observe(offset, chunk);
                exact.observe(offset, chunk);
                offset += n as u64;
                rest = more;
                if rng.below(40) == 0 {
                    assert_eq!(seen(&short), seen(&exact), "seed {seed}, at {offset}");
                }
            }
            assert_eq!(seen(&short), seen(&exact), "seed {seed}, at the end");
            same_cells(short.current().parser.screen(), exact.current().parser.screen());
            let (a, b) = (short.current(), exact.current());
            for row in 0..rows {
                assert_eq!(
                    a.parser.screen().row_wrapped(row),
                    b.parser.screen().row_wrapped(row),
                    "seed {seed}: wrap mark of row {row}"
                );
            }
            cut_away += b.parsed - a.parsed;
        }
        assert!(cut_away > 1_000_000, "only {cut_away} bytes were cut: the test tests nothing");
    }

    #[test]
    fn a_long_cat_is_mostly_not_emulated() {
        let s = Screen::new(80, 24, 1000);
        let line = b"a line of a long file, not too short and not too long\r\n";
        let mut offset = 0;
        for _ in 0..100_000 {
            s.observe(offset, line);
            offset += line.len() as u64;
        }
        let x = vec![b'x'; 4 << 20];
        s.observe(offset, &x);
        let (end, lines) = s.text();
        assert_eq!(end, offset + x.len() as u64);
        assert!(lines[..23].iter().all(|l| *l == "x".repeat(80)), "{lines:?}");
        let parsed = s.current().parsed;
        assert!(parsed < end / 10, "{parsed} of {end} bytes parsed");
    }

    #[test]
    fn a_stretch_that_starts_at_the_top_of_a_full_screen_is_cut_only_once_it_is_all_gone() {
        // The cursor goes home over a full screen; then lines, some of which push the old
        // rows out and some not quite.
        for lines in 1..40 {
            let mut out = b"old 1\r\nold 2\r\nold 3\x1b[H".to_vec();
            for i in 0..lines {
                out.extend_from_slice(format!("{i}\r\n").as_bytes());
            }
            out.extend_from_slice(b"\x1b[Hend");
            let short = Screen::build(10, 3, 2, Feed::Shorten, Some(16));
            let exact = Screen::build(10, 3, 2, Feed::Exact, Some(16));
            short.observe(0, &out);
            exact.observe(0, &out);
            assert_eq!(seen(&short), seen(&exact), "{lines} lines");
        }
    }
}
