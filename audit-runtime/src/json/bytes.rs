//! Word-at-a-time byte tests for JSON string scanning, shared by the
//! canonical-line scanner (`integrity::fast_verify`) and the borrowed
//! validator (`schema::validate_json`).

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each zero byte of `x`; only the lowest set bit is exact
/// (a borrow may mark a byte after a zero byte too).
#[inline]
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(ONES) & !x & HIGH
}

/// Marks `"` and `\` bytes of the little-endian word `w`: the lowest set
/// bit is the first such byte.
#[inline]
pub(crate) fn quote_or_backslash(w: u64) -> u64 {
    zero_bytes(w ^ (ONES * u64::from(b'"'))) | zero_bytes(w ^ (ONES * u64::from(b'\\')))
}

/// Like [`quote_or_backslash`], bytes below 0x20 marked too.
#[inline]
pub(crate) fn string_special(w: u64) -> u64 {
    // (b - 0x20) borrows into the high bit unless the byte already had it
    // set (non-ASCII bytes are never special).
    quote_or_backslash(w) | (w.wrapping_sub(ONES * 0x20) & !w & HIGH)
}

/// Offset of the first byte of `b[i..]` that [`string_special`] (or, with
/// `controls` false, [`quote_or_backslash`]) marks, eight bytes at a time;
/// `b.len()` when there is none.
#[inline]
pub(crate) fn next_special(b: &[u8], mut i: usize, controls: bool) -> usize {
    while let Some(chunk) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let m = if controls {
            string_special(w)
        } else {
            quote_or_backslash(w)
        };
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || (controls && c < 0x20) {
            return i;
        }
        i += 1;
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_special_byte_at_every_offset() {
        for b in 0..=255u8 {
            for len in 0..20usize {
                for pos in 0..len {
                    for other in [b'a', 0x00, 0xff, 0x21, 0x5b, 0x1f, 0x80] {
                        let mut v = vec![b'x'; len];
                        v[pos] = b;
                        if pos + 1 < len {
                            v[pos + 1] = other;
                        }
                        for controls in [false, true] {
                            let special = |c: u8| c == b'"' || c == b'\\' || (controls && c < 0x20);
                            let want = v.iter().position(|&c| special(c)).unwrap_or(len);
                            assert_eq!(next_special(&v, 0, controls), want, "{v:?} {controls}");
                        }
                    }
                }
            }
        }
    }
}
