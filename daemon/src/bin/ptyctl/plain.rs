//! `--plain`: terminal output as text. Escape sequences (colours, cursor moves, titles,
//! prompt marks) are parsed as a terminal parses them (`vte`) and dropped; what is left
//! is the printed text, tabs, and line ends as LF (a CR before an LF, or alone, is
//! dropped). Stateful, so a sequence split across chunks is still removed whole.

use std::borrow::Cow;

/// How ptyctl prints a session's output.
pub enum Render {
    /// The bytes as the terminal got them.
    Raw,
    /// As text (`--plain`). Boxed: the parser's buffers are large, and most output is raw.
    Plain(Box<Plain>),
}

impl Render {
    /// `--plain` given or not.
    pub fn from_flag(plain: bool) -> Render {
        if plain {
            Render::Plain(Box::default())
        } else {
            Render::Raw
        }
    }

    /// `data` (which follows what this has rendered already) as it should be printed.
    pub fn render<'a>(&mut self, data: &'a [u8]) -> Cow<'a, [u8]> {
        match self {
            Render::Raw => Cow::Borrowed(data),
            Render::Plain(plain) => Cow::Owned(plain.text(data)),
        }
    }

    /// `text` (a whole piece of output) as it should be printed.
    pub fn render_text(&mut self, text: &str) -> String {
        String::from_utf8_lossy(&self.render(text.as_bytes())).into_owned()
    }
}

/// Turns chunks of output into plain text.
#[derive(Default)]
pub struct Plain {
    parser: vte::Parser,
}

struct Text<'a>(&'a mut Vec<u8>);

impl vte::Perform for Text<'_> {
    fn print(&mut self, c: char) {
        let mut buf = [0; 4];
        self.0.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }

    fn execute(&mut self, byte: u8) {
        if matches!(byte, b'\n' | b'\t') {
            self.0.push(byte);
        }
    }
}

impl Plain {
    /// The text in `data`, given everything before it.
    pub fn text(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len());
        self.parser.advance(&mut Text(&mut out), data);
        out
    }

    /// All of `data` as text.
    #[cfg(test)]
    pub fn of(data: &[u8]) -> Vec<u8> {
        Plain::default().text(data)
    }
}

#[cfg(test)]
mod tests {
    use super::Plain;

    #[test]
    fn escapes_go_and_text_tabs_and_line_ends_stay() {
        let out = b"\x1b]133;C\x07\r\x1b[1;31mred\x1b[m\tcol\r\nnext\x1b]0;title\x07 line\r\n";
        assert_eq!(Plain::of(out), b"red\tcol\nnext line\n");
        // Split anywhere, the same.
        for split in 0..out.len() {
            let mut p = Plain::default();
            let mut got = p.text(&out[..split]);
            got.extend(p.text(&out[split..]));
            assert_eq!(got, b"red\tcol\nnext line\n", "split at {split}");
        }
        assert_eq!(Plain::of("é 漢字\r\n".as_bytes()), "é 漢字\n".as_bytes());
    }
}
