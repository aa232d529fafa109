//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, never
//! enabled by a product build): attribute templates and mechanisms exactly
//! as the C boundary receives them.
//!
//! The fuzzer's bytes describe a `CK_ATTRIBUTE` array or a `CK_MECHANISM`
//! whose pointers are NULL or point into a buffer this module owns, with
//! lengths that are arbitrary where the pointer is NULL (the interesting
//! lie) and stay inside the buffer otherwise (a longer one would break the
//! calling contract every `// SAFETY:` line here relies on, which no parser
//! can check). The parsers then run as `objects` and `sign` run them.

use cryptoki_sys::{CK_ATTRIBUTE, CK_MECHANISM, CK_ULONG, CK_UNAVAILABLE_INFORMATION};

use super::{mechanism, AttrAnswer, Template};
use crate::attributes::template_to_wire;
use crate::error::Error;
use crate::mechanism::{digest_mechanism, sign_mechanism};

/// Attribute types worth hitting often: every kind the wire form knows.
const TYPES: [CK_ULONG; 12] = [
    cryptoki_sys::CKA_CLASS,
    cryptoki_sys::CKA_TOKEN,
    cryptoki_sys::CKA_LABEL,
    cryptoki_sys::CKA_ID,
    cryptoki_sys::CKA_VALUE,
    cryptoki_sys::CKA_KEY_TYPE,
    cryptoki_sys::CKA_ALLOWED_MECHANISMS,
    cryptoki_sys::CKA_START_DATE,
    cryptoki_sys::CKA_WRAP_TEMPLATE,
    cryptoki_sys::CKA_MODULUS_BITS,
    cryptoki_sys::CKA_EC_PARAMS,
    cryptoki_sys::CKA_SIGN,
];

/// Mechanism types worth hitting often: every parameter shape the module
/// parses, and a few it refuses.
const MECHANISMS: [CK_ULONG; 10] = [
    cryptoki_sys::CKM_RSA_PKCS_PSS,
    cryptoki_sys::CKM_SHA256_RSA_PKCS_PSS,
    cryptoki_sys::CKM_SHA512_RSA_PKCS_PSS,
    cryptoki_sys::CKM_RSA_PKCS,
    cryptoki_sys::CKM_ECDSA,
    cryptoki_sys::CKM_ECDSA_SHA384,
    cryptoki_sys::CKM_SHA256,
    cryptoki_sys::CKM_RSA_PKCS_OAEP,
    cryptoki_sys::CKM_AES_GCM,
    cryptoki_sys::CKM_SHA1_RSA_PKCS_PSS,
];

/// Reads the fuzzer's bytes front to back; exhausted input reads as zeros.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn ulong(&mut self) -> CK_ULONG {
        (0..8).fold(0, |acc, i| acc | CK_ULONG::from(self.u8()) << (8 * i))
    }

    /// A type from `table` half the time, any value otherwise.
    fn pick(&mut self, table: &[CK_ULONG]) -> CK_ULONG {
        let sel = self.u8();
        if sel & 1 == 0 {
            table[usize::from(sel >> 1) % table.len()]
        } else {
            self.ulong()
        }
    }

    /// NULL with any length, or a range inside a buffer of `size` bytes.
    fn region(&mut self, size: usize) -> Region {
        match self.u8() % 4 {
            0 => Region::Null(0),
            1 => Region::Null(self.ulong()),
            _ => {
                let off = usize::from(self.u16()) % (size + 1);
                let len = usize::from(self.u16()) % (size - off + 1);
                Region::Inside { off, len }
            }
        }
    }

    /// Copies the unread bytes into `buf` (as many as fit).
    fn rest_into(&self, buf: &mut [u8]) {
        let n = self.0.len().min(buf.len());
        buf[..n].copy_from_slice(&self.0[..n]);
    }
}

/// Where a pointer argument points.
#[derive(Clone, Copy)]
enum Region {
    Null(CK_ULONG),
    Inside { off: usize, len: usize },
}

impl Region {
    /// The pointer and length the application would pass; `base` is the
    /// start of the buffer the offsets were chosen for, taken once after
    /// the buffer was written so no later borrow invalidates it.
    fn resolve(self, base: *mut u8) -> (*mut u8, CK_ULONG) {
        match self {
            Region::Null(len) => (std::ptr::null_mut(), len),
            // `off` is at most the buffer's length: in, or one past, it.
            Region::Inside { off, len } => (base.wrapping_add(off), len as CK_ULONG),
        }
    }
}

/// Parses a template the way C_CreateObject / C_FindObjectsInit /
/// C_GenerateKeyPair do, then fills it the way C_GetAttributeValue does.
pub fn attribute_template(data: &[u8]) {
    let mut input = Bytes(data);
    let count = usize::from(input.u8() % 17);
    let claimed = match input.u8() % 8 {
        0 => input.ulong(),
        _ => count as CK_ULONG,
    };
    let mut buf = vec![0u8; usize::from(input.u16() % 512)];
    let shape: Vec<(CK_ULONG, Region)> = (0..count)
        .map(|_| (input.pick(&TYPES), input.region(buf.len())))
        .collect();
    let null_array = input.u8() & 1 == 0;
    // The rest of the input is the attribute bytes themselves.
    input.rest_into(&mut buf);
    let values = buf.as_mut_ptr();
    let mut attrs: Vec<CK_ATTRIBUTE> = shape
        .iter()
        .map(|&(type_, region)| {
            let (ptr, len) = region.resolve(values);
            CK_ATTRIBUTE {
                type_,
                pValue: ptr.cast(),
                ulValueLen: len,
            }
        })
        .collect();

    let base = if attrs.is_empty() && null_array {
        std::ptr::null_mut()
    } else {
        attrs.as_mut_ptr()
    };
    // Only as many entries as exist may be claimed; a NULL array may claim
    // any count, which must be refused.
    let claimed = if base.is_null() {
        claimed
    } else {
        claimed.min(count as CK_ULONG)
    };
    let template = match Template::new(base, claimed) {
        Ok(t) => t,
        Err(e) => {
            assert!(
                base.is_null() && claimed != 0,
                "refused a valid array: {e:?}"
            );
            return;
        }
    };
    if let Ok(entries) = template.entries() {
        for &(ty, value) in &entries {
            assert!(value.len() <= 512, "attribute {ty:#x} read past the buffer");
        }
        // A nested template's value is an array of pointers the
        // application vouches for; arbitrary bytes there are not a valid
        // call, so the fuzzer converts the flat entries only.
        let flat: Vec<_> = entries
            .iter()
            .filter(|(ty, _)| {
                mesign_proto::attr::kind(*ty) != mesign_proto::attr::AttrKind::AttributeArray
            })
            .copied()
            .collect();
        let _ = template_to_wire(&flat);
    }
    let types = template.types();
    assert_eq!(types.len() as CK_ULONG, claimed);

    // C_GetAttributeValue: answers derived from the entries, each pinned down.
    let answers: Vec<AttrAnswer> = types
        .iter()
        .map(|&ty| match ty % 4 {
            0 => AttrAnswer::Sensitive,
            1 => AttrAnswer::Invalid,
            _ => AttrAnswer::Value(vec![0xA5; (ty as usize >> 2) % 40]),
        })
        .collect();
    let before: Vec<CK_ATTRIBUTE> = attrs.clone();
    let mut template = template;
    let result = template.fill(&answers);
    for ((after, was), answer) in attrs.iter().zip(&before).zip(&answers) {
        let expected = match answer {
            AttrAnswer::Value(v) if was.pValue.is_null() => v.len() as CK_ULONG,
            AttrAnswer::Value(v) if v.len() as CK_ULONG <= was.ulValueLen => v.len() as CK_ULONG,
            _ => CK_UNAVAILABLE_INFORMATION,
        };
        assert_eq!(after.ulValueLen, expected, "length written for {answer:?}");
    }
    // Entries beyond the claimed count are not the module's to touch.
    for (after, was) in attrs.iter().zip(&before).skip(answers.len()) {
        assert_eq!(
            after.ulValueLen, was.ulValueLen,
            "wrote past the claimed count"
        );
    }
    let all_fit = attrs
        .iter()
        .take(answers.len())
        .all(|a| a.ulValueLen != CK_UNAVAILABLE_INFORMATION);
    assert_eq!(result.is_ok(), all_fit, "fill result {result:?}");
}

/// Parses a mechanism the way C_SignInit / C_VerifyInit / C_DigestInit do.
pub fn mechanism_parameters(data: &[u8]) {
    let mut input = Bytes(data);
    let ty = input.pick(&MECHANISMS);
    let mut buf = vec![0u8; usize::from(input.u8()) % 64];
    let region = input.region(buf.len());
    input.rest_into(&mut buf);
    let (ptr, len) = region.resolve(buf.as_mut_ptr());
    let m = CK_MECHANISM {
        mechanism: ty,
        pParameter: ptr.cast(),
        ulParameterLen: len,
    };
    let raw = match mechanism(&m) {
        Ok(raw) => raw,
        Err(e) => panic!("a non-NULL mechanism was refused: {e:?}"),
    };
    match sign_mechanism(&raw) {
        Ok(parsed) => {
            let pss_size = size_of::<cryptoki_sys::CK_RSA_PKCS_PSS_PARAMS>() as CK_ULONG;
            let wants_pss = matches!(
                parsed.kind,
                crate::mechanism::SignKind::RsaPss(_) | crate::mechanism::SignKind::RsaPssHashed(_)
            );
            let eddsa_size = size_of::<cryptoki_sys::CK_EDDSA_PARAMS>() as CK_ULONG;
            if wants_pss {
                assert!(!ptr.is_null() && len == pss_size, "PSS without its struct");
            } else if parsed.kind == crate::mechanism::SignKind::Eddsa {
                // Pure Ed25519: no parameter, or CK_EDDSA_PARAMS saying so.
                assert!(
                    (ptr.is_null() && len == 0) || (!ptr.is_null() && len == eddsa_size),
                    "EdDSA with a parameter of another size"
                );
            } else {
                assert!(
                    ptr.is_null() && len == 0,
                    "parameter accepted where none fits"
                );
            }
            let _ = parsed.scheme();
        }
        Err(Error::MechanismInvalid(t) | Error::MechanismParamInvalid(t)) => assert_eq!(t, ty),
        Err(e) => panic!("unexpected error {e:?}"),
    }
    if digest_mechanism(&raw).is_ok() {
        assert!(ptr.is_null() && len == 0, "digest accepted a parameter");
    }
    assert!(mechanism(std::ptr::null()).is_err());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_survive_edge_inputs() {
        for data in [
            &[][..],
            &[0xFF; 64],
            &[3, 0, 40, 0, 0, 1, 2, 8, 0, 2, 0, 4, 0, 9, 9, 9],
            &[0, 0, 0, 0, 0],
        ] {
            attribute_template(data);
            mechanism_parameters(data);
        }
        // A PSS mechanism whose parameter is exactly the struct.
        let mut pss = vec![0u8, 30, 2, 0, 0, 24, 0];
        pss.extend_from_slice(&[0; 24]);
        mechanism_parameters(&pss);
    }
}
