//! Lowercase hexadecimal: the one digit table of the crate (JSON escapes,
//! UUIDs, digests, pseudonyms).

/// The sixteen lowercase hex digits.
pub(crate) const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Two lowercase hex digits for every byte value.
static PAIRS: [[u8; 2]; 256] = {
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [DIGITS[i >> 4], DIGITS[i & 0xf]];
        i += 1;
    }
    t
};

/// The two hex digits of `b`.
#[inline(always)]
pub(crate) fn pair(b: u8) -> [u8; 2] {
    PAIRS[usize::from(b)]
}

/// Writes the hex of `bytes` to the start of `out`, as much as fits (two
/// digits a byte), and returns the number of digits written.
#[inline]
pub(crate) fn encode_into(bytes: &[u8], out: &mut [u8]) -> usize {
    let mut n = 0;
    for (slot, &b) in out.chunks_exact_mut(2).zip(bytes) {
        slot.copy_from_slice(&pair(b));
        n += 2;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_agree_with_the_formatter() {
        for b in 0..=255u8 {
            assert_eq!(pair(b), format!("{b:02x}").as_bytes());
        }
        let mut out = [0u8; 5];
        assert_eq!(encode_into(&[0xab, 0x01, 0xff], &mut out), 4);
        assert_eq!(&out[..4], b"ab01");
    }
}
