//! The one DER structure the benchmark writes: an RSA SubjectPublicKeyInfo,
//! so that the `openssl` command line can verify RSA samples.

/// DER of `AlgorithmIdentifier { rsaEncryption, NULL }`.
const RSA_ENCRYPTION_ALGORITHM: [u8; 15] = [
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];

/// `SubjectPublicKeyInfo` for an RSA key given as big-endian modulus and
/// exponent (RFC 8017 A.1.1, RFC 5280 4.1).
pub fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let mut rsa_public_key = integer(modulus);
    rsa_public_key.extend(integer(exponent));
    let rsa_public_key = tagged(0x30, &rsa_public_key);
    let mut bits = vec![0u8]; // no unused bits
    bits.extend(rsa_public_key);
    let mut spki = RSA_ENCRYPTION_ALGORITHM.to_vec();
    spki.extend(tagged(0x03, &bits));
    tagged(0x30, &spki)
}

/// A non-negative INTEGER: leading zeros dropped, one added back when the top
/// bit would otherwise make it negative.
fn integer(big_endian: &[u8]) -> Vec<u8> {
    let start = big_endian
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(big_endian.len().saturating_sub(1));
    let digits = &big_endian[start.min(big_endian.len())..];
    let mut content = Vec::with_capacity(digits.len() + 1);
    if digits.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(digits);
    tagged(0x02, &content)
}

fn tagged(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_minimal_and_positive() {
        assert_eq!(integer(&[0x01, 0x00, 0x01]), [0x02, 0x03, 0x01, 0x00, 0x01]);
        assert_eq!(integer(&[0x00, 0x00, 0x80]), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(integer(&[0x00]), [0x02, 0x01, 0x00]);
    }

    #[test]
    fn long_lengths_use_the_long_form() {
        let content = vec![0xaa; 300];
        let der = tagged(0x04, &content);
        assert_eq!(&der[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(der.len(), 304);
    }

    #[test]
    fn spki_matches_aws_lc_rs_encoding() {
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::rsa::KeySize;
        use aws_lc_rs::signature::KeyPair;
        let key = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).unwrap();
        let public = key.public_key();
        let ours = rsa_spki(
            public.modulus().big_endian_without_leading_zero(),
            public.exponent().big_endian_without_leading_zero(),
        );
        let theirs = public.as_der().unwrap();
        assert_eq!(ours, theirs.as_ref());
    }
}
