//! Just enough DER reading for the suite: one TLV at a time.
//!
//! Used to unwrap CKA_EC_POINT and to pull the subject out of the test
//! certificate; not a general parser (no indefinite lengths, no long tags).

/// Splits one TLV off `input`: `(tag, content, rest)`.
pub fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let (&tag, after_tag) = input.split_first().ok_or("empty DER input")?;
    let (&first, after_len) = after_tag.split_first().ok_or("DER length missing")?;
    let (len, body) = if first < 0x80 {
        (first as usize, after_len)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || after_len.len() < n {
            return Err(format!("unsupported DER length form {first:#04x}"));
        }
        let len = after_len[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, &after_len[n..])
    };
    if body.len() < len {
        return Err(format!("DER value needs {len} bytes, {} left", body.len()));
    }
    Ok((tag, &body[..len], &body[len..]))
}

/// The full encoding (tag, length and content) of the first TLV in `input`.
pub fn first_element(input: &[u8]) -> Result<&[u8], String> {
    let (_, _, rest) = tlv(input)?;
    Ok(&input[..input.len() - rest.len()])
}

/// The DER subject Name of an X.509 certificate.
pub fn certificate_subject(cert: &[u8]) -> Result<Vec<u8>, String> {
    let (_, certificate, _) = tlv(cert)?;
    let (_, mut tbs, _) = tlv(certificate)?;
    // [0] version is optional; serial, signature, issuer, validity precede subject.
    if tbs.first() == Some(&0xa0) {
        tbs = tlv(tbs)?.2;
    }
    for _ in 0..4 {
        tbs = tlv(tbs)?.2;
    }
    Ok(first_element(tbs)?.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_form_lengths() {
        let mut v = vec![0x04, 0x81, 0x80];
        v.extend(std::iter::repeat_n(9u8, 0x80));
        v.push(0xff);
        let (tag, content, rest) = tlv(&v).unwrap();
        assert_eq!((tag, content.len(), rest), (0x04, 0x80, &[0xffu8][..]));
    }

    #[test]
    fn truncated_input_is_an_error() {
        assert!(tlv(&[0x04, 0x05, 1, 2]).is_err());
    }

    #[test]
    fn subject_of_the_committed_certificate() {
        let cert = include_bytes!("../testdata/cert-p256.der");
        let subject = certificate_subject(cert).unwrap();
        assert_eq!(subject[0], 0x30);
        let text = String::from_utf8_lossy(&subject);
        assert!(text.contains("MeSign conformance suite"), "{text}");
    }
}
