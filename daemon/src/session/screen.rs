//! The screen a session shows, kept by a terminal emulator (the `vt100` crate) that
//! follows the session's output from byte 0 and its size: an output tap. It answers
//! nothing to the program (device-attribute or cursor-position queries produce no input),
//! and its memory is bounded by the size and the scrollback lines, whatever is printed.
//!
//! A [`Snapshot`] is the screen at one output offset: its text (what `ptyctl screen`
//! prints), its cursor, title and modes, and a byte stream that, written into a fresh
//! terminal of the same size, reproduces it: the main screen (with scrollback when asked)
//! painted first, then the alternate screen if a program has it up, then the modes.

use std::sync::{Mutex, MutexGuard};

use super::output::OutputTap;

/// Longest window title kept.
const MAX_TITLE: usize = 1024;

/// Longest OSC string passed to the emulator. Its parser buffers an OSC until its end,
/// without limit: past this the string is ended early and the rest skipped until its
/// real terminator, so a program printing an endless OSC cannot grow ptyd's memory.
const MAX_OSC: usize = 4096;

/// Where the output stands with respect to OSC strings (`ESC ] … BEL` or `ESC ] … ESC \`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Osc {
    /// Outside one.
    #[default]
    Ground,
    /// Just after an ESC outside one.
    Escape,
    /// Inside one, this many bytes long.
    Inside(usize),
    /// Just after an ESC inside one (an ST may follow).
    InsideEscape(usize),
    /// Inside one that was cut: skipping to its terminator.
    Skipping,
    /// Just after an ESC while skipping.
    SkippingEscape,
}

impl Osc {
    /// Moves past `b`; true when `b` must be withheld from the emulator.
    fn step(&mut self, b: u8) -> Step {
        const ESC: u8 = 0x1b;
        let ends = |b: u8| matches!(b, 0x07 | 0x18 | 0x1a);
        let (next, step) = match (*self, b) {
            (Osc::Ground, ESC) => (Osc::Escape, Step::Pass),
            (Osc::Ground, _) => (Osc::Ground, Step::Pass),
            (Osc::Escape, b']') => (Osc::Inside(0), Step::Pass),
            (Osc::Escape, ESC) => (Osc::Escape, Step::Pass),
            (Osc::Escape, _) => (Osc::Ground, Step::Pass),
            (Osc::Inside(_), b) if ends(b) => (Osc::Ground, Step::Pass),
            (Osc::Inside(n), ESC) => (Osc::InsideEscape(n), Step::Pass),
            (Osc::Inside(n), _) if n >= MAX_OSC => (Osc::Skipping, Step::Cut),
            (Osc::Inside(n), _) => (Osc::Inside(n + 1), Step::Pass),
            (Osc::InsideEscape(_), b'\\') => (Osc::Ground, Step::Pass),
            // Any other ESC ends the string (the emulator does the same) and starts anew.
            (Osc::InsideEscape(_), b']') => (Osc::Inside(0), Step::Pass),
            (Osc::InsideEscape(_), ESC) => (Osc::Escape, Step::Pass),
            (Osc::InsideEscape(_), _) => (Osc::Ground, Step::Pass),
            (Osc::Skipping, b) if ends(b) => (Osc::Ground, Step::Skip),
            (Osc::Skipping, ESC) => (Osc::SkippingEscape, Step::Skip),
            (Osc::Skipping, _) => (Osc::Skipping, Step::Skip),
            (Osc::SkippingEscape, b'\\') => (Osc::Ground, Step::Skip),
            (Osc::SkippingEscape, _) => (Osc::Skipping, Step::Skip),
        };
        *self = next;
        step
    }
}

/// The scroll region (DECSTBM) and origin mode (DECOM), which the emulator applies but
/// does not report, followed from the output with a small CSI recognizer.
#[derive(Debug, Default, Clone, Copy)]
struct Margins {
    csi: Csi,
    /// Top and bottom rows, from 1, when narrower than the screen.
    region: Option<(u16, u16)>,
    origin: bool,
}

#[derive(Debug, Default, Clone, Copy)]
enum Csi {
    #[default]
    Ground,
    Escape,
    /// Inside `ESC [`: whether private (`?`), an intermediate byte, the parameters so far.
    Params {
        private: bool,
        intermediate: Option<u8>,
        params: [u16; 4],
        count: usize,
        overflow: bool,
    },
}

impl Margins {
    fn step(&mut self, b: u8) {
        self.csi = match (self.csi, b) {
            (_, 0x1b) => Csi::Escape,
            (Csi::Ground, _) => Csi::Ground,
            (Csi::Escape, b'[') => Csi::Params {
                private: false,
                intermediate: None,
                params: [0; 4],
                count: 0,
                overflow: false,
            },
            (Csi::Escape, b'c') => {
                // RIS: everything back to its default.
                (self.region, self.origin) = (None, false);
                Csi::Ground
            }
            (Csi::Escape, _) => Csi::Ground,
            (Csi::Params { private: false, intermediate: None, count: 0, .. }, b'?') => {
                Csi::Params {
                    private: true,
                    intermediate: None,
                    params: [0; 4],
                    count: 0,
                    overflow: false,
                }
            }
            (Csi::Params { private, intermediate, mut params, mut count, mut overflow }, b) => {
                match b {
                    b'0'..=b'9' => {
                        if count == 0 {
                            count = 1;
                        }
                        match params.get_mut(count - 1) {
                            Some(p) => {
                                *p = p.saturating_mul(10).saturating_add(u16::from(b - b'0'))
                            }
                            None => overflow = true,
                        }
                        Csi::Params { private, intermediate, params, count, overflow }
                    }
                    b';' => {
                        count = count.max(1) + 1;
                        overflow |= count > params.len();
                        Csi::Params { private, intermediate, params, count, overflow }
                    }
                    0x20..=0x2f => {
                        Csi::Params { private, intermediate: Some(b), params, count, overflow }
                    }
                    0x40..=0x7e => {
                        if !overflow {
                            self.finish(
                                private,
                                intermediate,
                                &params[..count.min(params.len())],
                                b,
                            );
                        }
                        Csi::Ground
                    }
                    // C0 controls inside a sequence are carried out and do not end it.
                    _ => Csi::Params { private, intermediate, params, count, overflow },
                }
            }
        };
    }

    fn finish(&mut self, private: bool, intermediate: Option<u8>, params: &[u16], fin: u8) {
        match (private, intermediate, fin) {
            (false, None, b'r') => {
                let top = params.first().copied().filter(|t| *t > 0).unwrap_or(1);
                let bottom = params.get(1).copied().filter(|b| *b > 0);
                self.region = match bottom {
                    Some(bottom) if bottom > top => Some((top, bottom)),
                    None if top > 1 => Some((top, u16::MAX)),
                    _ => None,
                };
            }
            (true, None, b'h' | b'l') if params.contains(&6) => self.origin = fin == b'h',
            // DECSTR, a soft reset.
            (false, Some(b'!'), b'p') => (self.region, self.origin) = (None, false),
            _ => {}
        }
    }
}

/// What to do with one output byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Give it to the emulator.
    Pass,
    /// End the OSC string here (a BEL instead of this byte), then skip.
    Cut,
    /// Withhold it.
    Skip,
}

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

struct State {
    parser: vt100::Parser<Extras>,
    osc: Osc,
    margins: Margins,
    /// The output offset the screen reflects: every byte before it has been processed.
    offset: u64,
    scrollback: usize,
}

/// A session's screen.
pub struct Screen {
    state: Mutex<State>,
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
    pub fn new(cols: u16, rows: u16, scrollback: usize) -> Screen {
        let parser = vt100::Parser::new_with_callbacks(rows, cols, scrollback, Extras::default());
        let margins = Margins::default();
        Screen {
            state: Mutex::new(State { parser, osc: Osc::Ground, margins, offset: 0, scrollback }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows the terminal's new size.
    pub fn resize(&self, cols: u16, rows: u16) {
        let mut st = self.state();
        st.parser.screen_mut().set_size(rows, cols);
        // Terminals reset the scroll region to the whole screen on a resize.
        st.margins.region = None;
    }

    /// The offset the screen reflects.
    pub fn offset(&self) -> u64 {
        self.state().offset
    }

    /// The rows of the screen shown, trailing blanks trimmed, and the offset they reflect:
    /// cheaper than a snapshot, for matching.
    pub fn text(&self) -> (u64, Vec<String>) {
        let st = self.state();
        let screen = st.parser.screen();
        let (_, cols) = screen.size();
        (st.offset, screen.rows(0, cols).map(|r| r.trim_end().to_string()).collect())
    }

    /// The screen now, with up to `scrollback` lines of main-screen history.
    pub fn snapshot(&self, scrollback: usize) -> Snapshot {
        // Copied under the lock, built after it: the session's reader thread waits on this
        // lock to feed the screen, and must not wait for a snapshot to be serialized.
        let (copy, extras, margins, offset, kept) = {
            let st = self.state();
            let copy = st.parser.screen().clone();
            (copy, st.parser.callbacks().clone(), st.margins, st.offset, st.scrollback)
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
        let st = &mut *st;
        // Hand the emulator runs of bytes, holding back what an overlong OSC would buffer.
        let mut run = 0;
        for (i, b) in data.iter().enumerate() {
            st.margins.step(*b);
            match st.osc.step(*b) {
                Step::Pass => {}
                Step::Cut => {
                    st.parser.process(&data[run..i]);
                    st.parser.process(b"\x07");
                    run = i + 1;
                }
                Step::Skip => {
                    st.parser.process(&data[run..i]);
                    run = i + 1;
                }
            }
        }
        st.parser.process(&data[run..]);
        st.offset = offset + data.len() as u64;
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
    use super::*;

    fn fed(cols: u16, rows: u16, bytes: &[u8]) -> Screen {
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
        same_cells(s.state().parser.screen(), replay(&snap).screen());
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
        same_cells(s.state().parser.screen(), fresh.screen());
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
        same_cells(s.state().parser.screen(), fresh.screen());
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
            same_cells(s.state().parser.screen(), b.screen());
            // What follows lands in the same place in both: the margins crossed over.
            let more = b"\r\n1\r\n2\r\n3\r\n4\x1b[1;1HH\x1b[99;1HB";
            s.observe(setup.len() as u64, more);
            b.process(more);
            same_cells(s.state().parser.screen(), b.screen());
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
        assert_eq!(s.state().osc, Osc::Ground);
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
        assert_eq!(s.state().osc, Osc::Ground, "the OSC was skipped to its end");
        assert!(snap.ansi.len() < 4 << 20, "snapshot of {} bytes", snap.ansi.len());
    }
}
