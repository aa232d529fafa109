//! Blank-padded fixed-width text fields of the PKCS#11 info structures.

/// `text` truncated (at a character boundary) or padded with blanks to `N`
/// bytes, without a terminating NUL, as PKCS#11 wants.
pub(crate) fn padded<const N: usize>(text: &str) -> [u8; N] {
    let mut end = text.len().min(N);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    padded_bytes(&text.as_bytes()[..end])
}

/// `bytes` truncated or blank-padded to `N`.
pub(crate) fn padded_bytes<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [b' '; N];
    let n = bytes.len().min(N);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_and_truncates() {
        assert_eq!(&padded::<6>("ab"), b"ab    ");
        assert_eq!(&padded::<3>("abcdef"), b"abc");
        // "é" is two bytes; it must not be cut in half.
        assert_eq!(&padded::<2>("aé"), b"a ");
    }
}
