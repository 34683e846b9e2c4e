//! [`StackText`]: formatting into a stack buffer, for error types and
//! messages.

use crate::util::text::Text;

/// Formats into a stack buffer, spilling to the heap only for long text, so
/// an error message costs at most one allocation (none up to 23 bytes).
pub(crate) struct StackText {
    buf: [u8; 256],
    len: usize,
    spill: Option<String>,
}

impl StackText {
    pub(crate) fn new() -> StackText {
        StackText {
            buf: [0; 256],
            len: 0,
            spill: None,
        }
    }

    pub(crate) fn into_text(self) -> Text {
        match self.spill {
            Some(s) => Text::from(s),
            // Only whole `&str`s were copied in, so this is valid UTF-8.
            None => Text::new(std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()),
        }
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if let Some(spill) = &mut self.spill {
            spill.push_str(s);
        } else if self.len + s.len() <= self.buf.len() {
            self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
            self.len += s.len();
        } else {
            let mut spill = String::with_capacity(self.len + s.len());
            spill.push_str(std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default());
            spill.push_str(s);
            self.spill = Some(spill);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

    #[test]
    fn stack_text_spills_long_messages_intact() {
        let mut t = StackText::new();
        let long = "é".repeat(200);
        write!(t, "a{long}").unwrap();
        assert_eq!(t.into_text().as_str(), format!("a{long}"));
        let mut t = StackText::new();
        write!(t, "short").unwrap();
        assert_eq!(t.into_text(), "short");
    }
}
