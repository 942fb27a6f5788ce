//! Bracketed-paste mode (DECSET 2004), followed from the program's output: the first
//! output tap. `submit` pastes as a bracketed paste only when the program asked for it.

use std::sync::Mutex;

use super::output::OutputTap;

const PASTE_ON: &[u8] = b"\x1b[?2004h";
const PASTE_OFF: &[u8] = b"\x1b[?2004l";

#[derive(Default, Debug)]
struct State {
    on: bool,
    /// The end of the previous chunk, in case a mode sequence is split across reads.
    tail: Vec<u8>,
}

/// Whether the program has bracketed paste on.
#[derive(Default, Debug)]
pub struct PasteMode(Mutex<State>);

impl PasteMode {
    /// Whether the program has bracketed paste on.
    pub fn on(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).on
    }

    /// Updates the mode from a chunk of output.
    pub fn update(&self, data: &[u8]) {
        let mut st = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !data.contains(&0x1b) && st.tail.is_empty() {
            return;
        }
        let mut joined = std::mem::take(&mut st.tail);
        joined.extend_from_slice(data);
        let last = |pat: &[u8]| joined.windows(pat.len()).rposition(|w| w == pat);
        match (last(PASTE_ON), last(PASTE_OFF)) {
            (Some(on), Some(off)) => st.on = on > off,
            (Some(_), None) => st.on = true,
            (None, Some(_)) => st.on = false,
            (None, None) => {}
        }
        // Keep a partial escape sequence for the next chunk.
        let keep = PASTE_ON.len() - 1;
        let tail = &joined[joined.len().saturating_sub(keep)..];
        if let Some(esc) = tail.iter().rposition(|b| *b == 0x1b) {
            st.tail = tail[esc..].to_vec();
        }
    }
}

impl OutputTap for PasteMode {
    fn observe(&self, _offset: u64, data: &[u8]) {
        self.update(data);
    }
}

#[cfg(test)]
mod tests {
    use super::PasteMode;

    #[test]
    fn paste_mode_follows_the_last_sequence() {
        let m = PasteMode::default();
        m.update(b"prompt \x1b[?2004h$ ");
        assert!(m.on());
        m.update(b"\x1b[?2004l\r\noutput\x1b[?2004h");
        assert!(m.on());
        m.update(b"\x1b[?2004l");
        assert!(!m.on());
    }

    #[test]
    fn paste_mode_sequence_split_across_chunks() {
        let m = PasteMode::default();
        m.update(b"abc\x1b[?20");
        assert!(!m.on());
        m.update(b"04h$ ");
        assert!(m.on());
        m.update(b"x\x1b");
        m.update(b"[?2004l");
        assert!(!m.on());
    }
}
