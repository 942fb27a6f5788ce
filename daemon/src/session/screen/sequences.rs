//! What vt100 does not follow or bound by itself, tracked beside it from the same bytes:
//! OSC strings (cut when overlong) and the scroll region with origin mode.

/// Longest OSC string passed to the emulator. Its parser buffers an OSC until its end,
/// without limit: past this the string is ended early and the rest skipped until its
/// real terminator, so a program printing an endless OSC cannot grow ptyd's memory.
pub(super) const MAX_OSC: usize = 4096;

/// Where the output stands with respect to OSC strings (`ESC ] … BEL` or `ESC ] … ESC \`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Osc {
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
    /// Moves past `b`: what to do with it.
    pub(super) fn step(&mut self, b: u8) -> Step {
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
#[derive(Debug, Clone, Copy)]
pub(super) struct Margins {
    csi: Csi,
    /// Top and bottom rows, from 1, when narrower than the screen: what a snapshot sets.
    pub(super) region: Option<(u16, u16)>,
    pub(super) origin: bool,
    /// The screen's height, which decides how vt100 takes a region.
    rows: u16,
    /// Whether vt100 may be scrolling only part of the screen. It keeps a region across a
    /// resize and ignores a soft reset, so this is cleared only by a region vt100 itself
    /// takes as the whole screen, or a full reset.
    emulator_partial: bool,
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
    /// Margins of a fresh screen `rows` high.
    pub(super) fn new(rows: u16) -> Margins {
        Margins { csi: Csi::Ground, region: None, origin: false, rows, emulator_partial: false }
    }

    /// The terminal's new height: terminals reset the region; vt100 keeps it.
    pub(super) fn resize(&mut self, rows: u16) {
        self.rows = rows;
        self.region = None;
    }

    /// Whether a line feed at the bottom of the screen scrolls the whole screen into the
    /// history, as far as vt100 is concerned.
    pub(super) fn scrolls_whole_screen(&self) -> bool {
        !self.emulator_partial
    }

    /// Outside any escape sequence: every byte up to the next ESC leaves it unchanged.
    pub(super) fn in_ground(&self) -> bool {
        matches!(self.csi, Csi::Ground)
    }

    pub(super) fn step(&mut self, b: u8) {
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
                (self.region, self.origin, self.emulator_partial) = (None, false, false);
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
                        if overflow && !private && intermediate.is_none() && b == b'r' {
                            // Not followed exactly: assume the worst.
                            self.emulator_partial = true;
                        }
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
                // As vt100 takes it: rows from 0, the bottom clamped to the screen, and a
                // region that is not at least two rows high meaning the whole screen.
                let rows = self.rows.max(1);
                let bottom = bottom.unwrap_or(rows).min(rows);
                self.emulator_partial = top < bottom && (top > 1 || bottom < rows);
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
pub(super) enum Step {
    /// Give it to the emulator.
    Pass,
    /// End the OSC string here (a BEL instead of this byte), then skip.
    Cut,
    /// Withhold it.
    Skip,
}

/// Both trackers, stepped together over the output.
#[derive(Debug, Clone, Copy)]
pub(super) struct Trackers {
    pub(super) osc: Osc,
    pub(super) margins: Margins,
}

impl Trackers {
    /// Trackers for a fresh screen `rows` high.
    pub(super) fn new(rows: u16) -> Trackers {
        Trackers { osc: Osc::Ground, margins: Margins::new(rows) }
    }

    /// Follows `data` and hands `emit`, in order, the runs of it to give the emulator: all
    /// of it but the rest of an overlong OSC string, which is ended early with a BEL.
    pub(super) fn filter(&mut self, data: &[u8], mut emit: impl FnMut(&[u8])) {
        let mut run = 0;
        let mut i = 0;
        while i < data.len() {
            if self.osc == Osc::Ground && self.margins.in_ground() {
                // Nothing but an ESC changes either: jump to the next one.
                match memchr::memchr(0x1b, &data[i..]) {
                    Some(n) => i += n,
                    None => break,
                }
            }
            let b = data[i];
            self.margins.step(b);
            match self.osc.step(b) {
                Step::Pass => {}
                Step::Cut => {
                    emit(&data[run..i]);
                    emit(b"\x07");
                    run = i + 1;
                }
                Step::Skip => {
                    emit(&data[run..i]);
                    run = i + 1;
                }
            }
            i += 1;
        }
        emit(&data[run..]);
    }

    /// Follows `data`, as if it had been given to the emulator.
    pub(super) fn follow(&mut self, data: &[u8]) {
        self.filter(data, |_| {});
    }
}
