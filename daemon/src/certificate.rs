//! X.509 certificates as C_CreateObject receives them: the DER in CKA_VALUE
//! is parsed once, and the attributes PKCS#11 derives from it (CKA_SUBJECT,
//! CKA_ISSUER, CKA_SERIAL_NUMBER, CKA_START_DATE, CKA_END_DATE,
//! CKA_CHECK_VALUE) are filled in when absent and checked when given.
//!
//! Applications search certificates by subject, issuer and serial (NSS,
//! Java and pyHanko all do); a stored subject that disagrees with the
//! certificate would make them pick the wrong one, so a mismatch is refused
//! rather than stored.

use aws_lc_rs::digest;
use cryptoki_sys::*;
use x509_cert::der::{Decode, Encode};
use x509_cert::time::Time;
use x509_cert::Certificate;

use crate::attributes::AttrMap;
use crate::error::HsmError;

/// The attributes a certificate's DER determines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFields {
    /// DER of the subject Name.
    pub subject: Vec<u8>,
    /// DER of the issuer Name.
    pub issuer: Vec<u8>,
    /// DER of the serial number INTEGER (tag and length included), as
    /// PKCS#11 specifies CKA_SERIAL_NUMBER.
    pub serial_number: Vec<u8>,
    /// notBefore as a CK_DATE ("YYYYMMDD").
    pub start_date: Vec<u8>,
    /// notAfter as a CK_DATE.
    pub end_date: Vec<u8>,
    /// The first three bytes of the SHA-1 of the DER (PKCS#11 3.0 §4.6.3).
    pub check_value: Vec<u8>,
}

/// Parses one DER certificate; anything else (PEM, trailing bytes, a
/// truncated or malformed encoding) is CKR_ATTRIBUTE_VALUE_INVALID.
pub fn parse(der: &[u8]) -> Result<CertificateFields, HsmError> {
    let invalid = || HsmError::AttributeValueInvalid(CKA_VALUE);
    let cert = Certificate::from_der(der).map_err(|_| invalid())?;
    let tbs = &cert.tbs_certificate;
    Ok(CertificateFields {
        subject: tbs.subject.to_der().map_err(|_| invalid())?,
        issuer: tbs.issuer.to_der().map_err(|_| invalid())?,
        serial_number: tbs.serial_number.to_der().map_err(|_| invalid())?,
        start_date: ck_date(&tbs.validity.not_before),
        end_date: ck_date(&tbs.validity.not_after),
        check_value: digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref()[..3].to_vec(),
    })
}

/// Fills the derived attributes of a certificate template from CKA_VALUE
/// and refuses given values that contradict it. Given dates are kept: the
/// application may narrow the period it wants the certificate used in.
pub fn complete(map: &mut AttrMap) -> Result<(), HsmError> {
    let value = map
        .get(&CKA_VALUE)
        .ok_or(HsmError::TemplateIncomplete(CKA_VALUE))?;
    let fields = parse(value)?;
    for (ty, derived) in [
        (CKA_SUBJECT, fields.subject),
        (CKA_ISSUER, fields.issuer),
        (CKA_SERIAL_NUMBER, fields.serial_number),
        (CKA_CHECK_VALUE, fields.check_value),
    ] {
        match map.get(&ty) {
            Some(given) if *given != derived => return Err(HsmError::AttributeValueInvalid(ty)),
            Some(_) => {}
            None => {
                map.insert(ty, derived);
            }
        }
    }
    for (ty, derived) in [
        (CKA_START_DATE, fields.start_date),
        (CKA_END_DATE, fields.end_date),
    ] {
        let entry = map.entry(ty).or_default();
        if entry.is_empty() {
            *entry = derived;
        }
    }
    Ok(())
}

fn ck_date(time: &Time) -> Vec<u8> {
    let t = time.to_date_time();
    format!("{:04}{:02}{:02}", t.year(), t.month(), t.day()).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The suite's committed self-signed P-256 certificate.
    const CERT: &[u8] = include_bytes!("../../softhsm-tests/testdata/cert-p256.der");

    #[test]
    fn fields_come_from_the_der() {
        let f = parse(CERT).unwrap();
        // Names are SEQUENCEs, the serial an INTEGER, both found verbatim
        // in the certificate.
        assert_eq!(f.subject[0], 0x30);
        assert_eq!(f.serial_number[0], 0x02);
        for part in [&f.subject, &f.issuer, &f.serial_number] {
            assert!(CERT.windows(part.len()).any(|w| w == part.as_slice()));
        }
        assert_eq!(f.start_date.len(), 8);
        assert!(f.start_date.iter().all(u8::is_ascii_digit));
        assert!(f.end_date > f.start_date);
        assert_eq!(f.check_value.len(), 3);
    }

    #[test]
    fn junk_truncation_and_trailing_bytes_are_refused() {
        let mut trailing = CERT.to_vec();
        trailing.push(0);
        for bad in [
            &b"not a certificate"[..],
            &CERT[..CERT.len() - 1],
            &trailing,
        ] {
            assert!(matches!(
                parse(bad),
                Err(HsmError::AttributeValueInvalid(CKA_VALUE))
            ));
        }
    }

    #[test]
    fn given_attributes_must_agree_and_missing_ones_are_filled() {
        let fields = parse(CERT).unwrap();
        let mut map = AttrMap::new();
        map.insert(CKA_VALUE, CERT.to_vec());
        map.insert(CKA_SUBJECT, fields.subject.clone());
        map.insert(CKA_START_DATE, Vec::new());
        map.insert(CKA_END_DATE, b"20990101".to_vec());
        complete(&mut map).unwrap();
        assert_eq!(map[&CKA_ISSUER], fields.issuer);
        assert_eq!(map[&CKA_SERIAL_NUMBER], fields.serial_number);
        assert_eq!(map[&CKA_START_DATE], fields.start_date);
        assert_eq!(map[&CKA_END_DATE], b"20990101".to_vec());

        let mut wrong = AttrMap::new();
        wrong.insert(CKA_VALUE, CERT.to_vec());
        wrong.insert(CKA_SERIAL_NUMBER, vec![0x02, 0x01, 0x07]);
        assert!(matches!(
            complete(&mut wrong),
            Err(HsmError::AttributeValueInvalid(CKA_SERIAL_NUMBER))
        ));
    }
}
