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

/// The hyphenated lowercase form of a UUID (8-4-4-4-12), a byte pair at a
/// time (the sink's worker writes one per event, the HTTP layer one per
/// request without a request id).
#[inline]
pub(crate) fn uuid_hyphenated(b: &[u8; 16]) -> [u8; 36] {
    let mut o = [b'-'; 36];
    // Where each byte's two digits go.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    for (byte, at) in b.iter().zip(AT) {
        let [hi, lo] = pair(*byte);
        o[at] = hi;
        o[at + 1] = lo;
    }
    o
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

    #[test]
    fn uuids_as_the_uuid_crate_writes_them() {
        for seed in 0..200u128 {
            let u =
                uuid::Uuid::from_u128(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
            assert_eq!(
                &uuid_hyphenated(u.as_bytes())[..],
                u.hyphenated().to_string().as_bytes()
            );
        }
    }
}
