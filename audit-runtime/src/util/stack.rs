//! [`StackText`]: formatting into a stack buffer, for error types and
//! messages.

use crate::util::text::Text;

/// Formats into a stack buffer of `N` bytes, spilling to the heap only for
/// longer text: an error message costs at most one allocation (none up to
/// 23 bytes, as a [`Text`]), a number none.
pub(crate) struct StackText<const N: usize = 256> {
    buf: [u8; N],
    len: usize,
    spill: Option<String>,
}

impl StackText {
    /// A buffer for a message or an error type (256 bytes).
    pub(crate) fn new() -> StackText {
        StackText::empty()
    }
}

impl<const N: usize> StackText<N> {
    /// An empty buffer.
    #[inline]
    pub(crate) fn empty() -> StackText<N> {
        StackText {
            buf: [0; N],
            len: 0,
            spill: None,
        }
    }

    /// What was written.
    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match &self.spill {
            Some(s) => s.as_bytes(),
            None => &self.buf[..self.len],
        }
    }

    /// What was written, as the string type of event fields.
    pub(crate) fn into_text(self) -> Text {
        match self.spill {
            Some(s) => Text::from(s),
            // Only whole `&str`s were copied in, so this is valid UTF-8.
            None => Text::new(std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()),
        }
    }
}

impl<const N: usize> std::fmt::Write for StackText<N> {
    #[inline]
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if let Some(spill) = &mut self.spill {
            spill.push_str(s);
        } else if self.len + s.len() <= N {
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

    #[test]
    fn a_small_buffer_spills_too() {
        let mut t = StackText::<4>::empty();
        write!(t, "ab").unwrap();
        assert_eq!(t.as_bytes(), b"ab");
        write!(t, "cde").unwrap();
        assert_eq!(t.as_bytes(), b"abcde");
        assert_eq!(t.into_text(), "abcde");
    }
}
