//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, never
//! enabled by a product build): attribute templates and mechanisms exactly
//! as the C boundary receives them.
//!
//! The fuzzer's bytes describe a `CK_ATTRIBUTE` array or a `CK_MECHANISM`
//! whose pointers are NULL or point into buffers this module owns, with
//! lengths that are arbitrary where the pointer is NULL (the interesting
//! lie) and stay inside the buffer otherwise (a longer one would break the
//! calling contract every `// SAFETY:` line here relies on, which no parser
//! can check). The parsers then run as `objects`, `sign`, `symmetric`,
//! `derive` and `wrap` run them.
//!
//! Structures that hold pointers themselves (a nested template's
//! `CK_ATTRIBUTE` array, `CK_ECDH1_DERIVE_PARAMS`, `CK_RSA_PKCS_OAEP_PARAMS`,
//! `CK_GCM_PARAMS`) are built here from the bytes rather than taken from
//! them: the module must follow the application's inner pointers, so
//! arbitrary bytes there would test the fuzzer, not the module. Their
//! counts, lengths and values stay arbitrary, and each inner pointer is
//! again NULL with any length or a range inside the buffer.

use cryptoki_sys::{
    CK_ATTRIBUTE, CK_ATTRIBUTE_TYPE, CK_ECDH1_DERIVE_PARAMS, CK_GCM_PARAMS, CK_MECHANISM,
    CK_RSA_PKCS_OAEP_PARAMS, CK_ULONG, CK_UNAVAILABLE_INFORMATION,
};
use mesign_proto::attr::{self, AttrKind};

use super::{mechanism, AttrAnswer, EntryValue, RawMechanism, Template};
use crate::attributes::template_to_wire;
use crate::error::Error;
use crate::mechanism::{digest_mechanism, sign_mechanism};
use crate::rsa_crypt::{crypt_mechanism, Crypt};
use crate::symmetric::cipher_params;
use crate::wrap::wrap_mechanism;

/// Attribute types worth hitting often: every kind the wire form knows,
/// the three nested templates among them.
const TYPES: [CK_ULONG; 14] = [
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
    cryptoki_sys::CKA_UNWRAP_TEMPLATE,
    cryptoki_sys::CKA_DERIVE_TEMPLATE,
];

/// Mechanism types worth hitting often: every parameter shape the module
/// parses, and a few it refuses.
const MECHANISMS: [CK_ULONG; 16] = [
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
    cryptoki_sys::CKM_ECDH1_DERIVE,
    cryptoki_sys::CKM_AES_KEY_WRAP,
    cryptoki_sys::CKM_AES_KEY_WRAP_PAD,
    cryptoki_sys::CKM_AES_KEY_WRAP_KWP,
    cryptoki_sys::CKM_AES_CBC_PAD,
    cryptoki_sys::CKM_AES_CTR,
];

/// KDFs for `CK_ECDH1_DERIVE_PARAMS`: the ones the daemon takes and some
/// it refuses.
const KDFS: [CK_ULONG; 6] = [
    cryptoki_sys::CKD_NULL,
    cryptoki_sys::CKD_SHA1_KDF,
    cryptoki_sys::CKD_SHA256_KDF,
    cryptoki_sys::CKD_SHA384_KDF,
    cryptoki_sys::CKD_SHA512_KDF,
    cryptoki_sys::CKD_SHA3_256_KDF,
];

/// Hash and MGF values for `CK_RSA_PKCS_OAEP_PARAMS`.
const OAEP_VALUES: [CK_ULONG; 8] = [
    cryptoki_sys::CKM_SHA_1,
    cryptoki_sys::CKM_SHA224,
    cryptoki_sys::CKM_SHA256,
    cryptoki_sys::CKM_SHA512,
    cryptoki_sys::CKG_MGF1_SHA1,
    cryptoki_sys::CKG_MGF1_SHA256,
    cryptoki_sys::CKG_MGF1_SHA512,
    cryptoki_sys::CKZ_DATA_SPECIFIED,
];

/// The most entries a generated nested template has.
const MAX_NESTED: usize = 8;

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

    /// The length declared for a structure of `size` bytes that lies in a
    /// buffer of `size + SLACK`: mostly exact, else anything that buffer
    /// holds.
    fn struct_len(&mut self, size: usize) -> usize {
        let sel = self.u8();
        if sel < 0xC0 {
            size
        } else {
            usize::from(sel) % (size + SLACK + 1)
        }
    }

    /// Copies the unread bytes into `buf` (as many as fit).
    fn rest_into(&self, buf: &mut [u8]) {
        let n = self.0.len().min(buf.len());
        buf[..n].copy_from_slice(&self.0[..n]);
    }
}

/// Bytes after a parameter structure that a declared length may cover.
const SLACK: usize = 8;

/// Where a pointer argument points.
#[derive(Clone, Copy, Debug)]
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

    /// The bytes an honest parser reads here, or `None` where it must
    /// refuse (NULL with a non-zero length).
    fn expected(self, buf: &[u8]) -> Option<&[u8]> {
        match self {
            Region::Null(0) => Some(&[]),
            Region::Null(_) => None,
            Region::Inside { off, len } => Some(&buf[off..off + len]),
        }
    }
}

fn is_nested(ty: CK_ATTRIBUTE_TYPE) -> bool {
    attr::kind(ty) == AttrKind::AttributeArray
}

/// How one top-level entry of a generated template looks.
enum Shape {
    /// A plain value (or NULL) in the value buffer.
    Flat(Region),
    /// A nested template: the application's own `CK_ATTRIBUTE` array, of
    /// which `declared` bytes are claimed as the value; `answer` entries
    /// come back when C_GetAttributeValue fills it.
    Nested {
        inner: Vec<(CK_ULONG, Region)>,
        declared: usize,
        answer: usize,
    },
}

impl Bytes<'_> {
    /// The shape of an entry of type `ty`. A nested type's value is always
    /// a real array (or NULL): the module follows the pointers in it.
    fn shape(&mut self, ty: CK_ULONG, size: usize) -> Shape {
        if !is_nested(ty) {
            return Shape::Flat(self.region(size));
        }
        let mode = self.u8();
        if mode % 4 == 0 {
            let len = if mode & 4 == 0 { 0 } else { self.ulong() };
            return Shape::Flat(Region::Null(len));
        }
        let inner: Vec<(CK_ULONG, Region)> = (0..usize::from(self.u8()) % (MAX_NESTED + 1))
            .map(|_| (self.pick(&TYPES), self.region(size)))
            .collect();
        let whole = inner.len() * size_of::<CK_ATTRIBUTE>();
        let declared = match self.u8() {
            sel if sel < 0xC0 => whole,
            _ => usize::from(self.u16()) % (whole + 1),
        };
        let answer = usize::from(self.u8()) % (MAX_NESTED + 1);
        Shape::Nested {
            inner,
            declared,
            answer,
        }
    }
}

/// The C_GetAttributeValue answer used for an entry of type `ty`, each
/// kind pinned down by the type; nested types get nested answers with
/// `nested_len` entries.
fn answer_for(ty: CK_ULONG, nested_len: usize) -> AttrAnswer {
    match ty % 4 {
        0 => AttrAnswer::Sensitive,
        1 => AttrAnswer::Invalid,
        _ if is_nested(ty) => AttrAnswer::Nested(
            (0..nested_len)
                .map(|i| (TYPES[i % TYPES.len()], vec![0x5A; (i * 7) % 20]))
                .collect(),
        ),
        _ => AttrAnswer::Value(vec![0xA5; (ty as usize >> 2) % 40]),
    }
}

/// Parses a template the way C_CreateObject / C_FindObjectsInit /
/// C_GenerateKeyPair / C_UnwrapKey / C_DeriveKey do, then fills it the way
/// C_GetAttributeValue does.
pub fn attribute_template(data: &[u8]) {
    template_went_to_wire(data);
}

/// [`attribute_template`], saying whether the template converted to the
/// wire form (seeds are checked with it).
fn template_went_to_wire(data: &[u8]) -> bool {
    let mut input = Bytes(data);
    let count = usize::from(input.u8() % 17);
    let claimed = match input.u8() % 8 {
        0 => input.ulong(),
        _ => count as CK_ULONG,
    };
    let mut buf = vec![0u8; usize::from(input.u16() % 512)];
    let shape: Vec<(CK_ULONG, Shape)> = (0..count)
        .map(|_| {
            let ty = input.pick(&TYPES);
            (ty, input.shape(ty, buf.len()))
        })
        .collect();
    let null_array = input.u8() & 1 == 0;
    // The rest of the input is the attribute bytes themselves.
    input.rest_into(&mut buf);
    let values = buf.as_mut_ptr();
    let entry = |ty, (ptr, len): (*mut u8, CK_ULONG)| CK_ATTRIBUTE {
        type_: ty,
        pValue: ptr.cast(),
        ulValueLen: len,
    };
    // The nested arrays live here, each allocated once and never resized,
    // so the pointers the outer entries hold stay valid.
    let mut nested: Vec<Vec<CK_ATTRIBUTE>> = shape
        .iter()
        .map(|(_, s)| match s {
            Shape::Nested { inner, .. } => inner
                .iter()
                .map(|&(ty, region)| entry(ty, region.resolve(values)))
                .collect(),
            Shape::Flat(_) => Vec::new(),
        })
        .collect();
    let mut attrs: Vec<CK_ATTRIBUTE> = shape
        .iter()
        .zip(nested.iter_mut())
        .map(|((ty, s), array)| match s {
            Shape::Flat(region) => entry(*ty, region.resolve(values)),
            Shape::Nested { declared, .. } => CK_ATTRIBUTE {
                type_: *ty,
                pValue: array.as_mut_ptr().cast(),
                ulValueLen: *declared as CK_ULONG,
            },
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
            return false;
        }
    };
    let mut converted = false;
    if let Ok(entries) = template.entries() {
        for ((ty, value), (_, s)) in entries.iter().zip(&shape) {
            match value {
                EntryValue::Bytes(v) => {
                    assert!(v.len() <= 512, "attribute {ty:#x} read past the buffer");
                }
                EntryValue::Nested(Some(inner)) => check_nested_entries(*ty, inner, s),
                EntryValue::Nested(None) => {}
            }
        }
        let wire = template_to_wire(&entries);
        if let Ok(wire) = &wire {
            check_nested_wire(&shape, wire);
            converted = true;
        }
    }
    let types = template.types();
    assert_eq!(types.len() as CK_ULONG, claimed);

    // C_GetAttributeValue: answers derived from the entries.
    let answers: Vec<AttrAnswer> = types
        .iter()
        .zip(&shape)
        .map(|(&ty, (_, s))| {
            let nested_len = match s {
                Shape::Nested { answer, .. } => *answer,
                Shape::Flat(_) => 0,
            };
            answer_for(ty, nested_len)
        })
        .collect();
    let before: Vec<CK_ATTRIBUTE> = attrs.clone();
    let nested_before: Vec<Vec<CK_ATTRIBUTE>> = nested.clone();
    let mut template = template;
    let result = template.fill(&answers);
    let mut problem = false;
    for (i, answer) in answers.iter().enumerate() {
        let (after, was) = (&attrs[i], &before[i]);
        let expected = match answer {
            AttrAnswer::Value(v) if was.pValue.is_null() => v.len() as CK_ULONG,
            AttrAnswer::Value(v) if v.len() as CK_ULONG <= was.ulValueLen => v.len() as CK_ULONG,
            AttrAnswer::Nested(entries) => {
                let needed = (entries.len() * size_of::<CK_ATTRIBUTE>()) as CK_ULONG;
                if was.pValue.is_null() {
                    needed
                } else if was.ulValueLen < needed {
                    CK_UNAVAILABLE_INFORMATION
                } else {
                    problem |= check_nested_fill(entries, &nested[i], &nested_before[i]);
                    needed
                }
            }
            _ => CK_UNAVAILABLE_INFORMATION,
        };
        assert_eq!(after.ulValueLen, expected, "length written for {answer:?}");
        problem |= expected == CK_UNAVAILABLE_INFORMATION;
    }
    // Entries beyond the claimed count are not the module's to touch.
    for (after, was) in attrs.iter().zip(&before).skip(answers.len()) {
        assert_eq!(
            after.ulValueLen, was.ulValueLen,
            "wrote past the claimed count"
        );
    }
    assert_eq!(result.is_ok(), !problem, "fill result {result:?}");
    converted
}

/// A nested template as `ffi` resolved it holds the entries the
/// application's array declared, in order, each value inside the buffer.
fn check_nested_entries(ty: CK_ULONG, inner: &[(CK_ATTRIBUTE_TYPE, &[u8])], shape: &Shape) {
    let offered: Vec<CK_ULONG> = match shape {
        Shape::Nested {
            inner, declared, ..
        } => {
            assert_eq!(declared % size_of::<CK_ATTRIBUTE>(), 0, "a partial entry");
            inner
                .iter()
                .take(declared / size_of::<CK_ATTRIBUTE>())
                .map(|&(ty, _)| ty)
                .collect()
        }
        // NULL with a zero length: an empty template.
        Shape::Flat(_) => Vec::new(),
    };
    let read: Vec<CK_ULONG> = inner.iter().map(|&(ty, _)| ty).collect();
    assert_eq!(read, offered, "nested template {ty:#x} read wrong");
    for (inner_ty, v) in inner {
        assert!(v.len() <= 512, "nested {inner_ty:#x} read past the buffer");
    }
}

/// Every nested template that went to the wire carries exactly the
/// entries the application's array declared, in order, and none of them
/// is itself nested (templates are one level deep).
fn check_nested_wire(shape: &[(CK_ULONG, Shape)], wire: &[mesign_proto::Attribute]) {
    for ((ty, s), a) in shape.iter().zip(wire) {
        assert_eq!(*ty, a.ty);
        let Shape::Nested {
            inner, declared, ..
        } = s
        else {
            continue;
        };
        let decoded = attr::read_attribute_array(&a.value).expect("a nested wire value decodes");
        assert_eq!(declared % size_of::<CK_ATTRIBUTE>(), 0, "a partial entry");
        let sent: Vec<CK_ULONG> = decoded.iter().map(|a| a.ty).collect();
        let offered: Vec<CK_ULONG> = inner
            .iter()
            .take(declared / size_of::<CK_ATTRIBUTE>())
            .map(|&(ty, _)| ty)
            .collect();
        assert_eq!(sent, offered, "nested entries changed on the way");
        assert!(!sent.iter().any(|&t| is_nested(t)), "two levels deep");
    }
}

/// Checks one nested array C_GetAttributeValue filled (its outer length
/// allowed it); true when an inner value did not fit.
fn check_nested_fill(
    entries: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    after: &[CK_ATTRIBUTE],
    before: &[CK_ATTRIBUTE],
) -> bool {
    let mut problem = false;
    for (i, (ty, value)) in entries.iter().enumerate() {
        let expected = if before[i].pValue.is_null() {
            value.len() as CK_ULONG
        } else if before[i].ulValueLen < value.len() as CK_ULONG {
            problem = true;
            CK_UNAVAILABLE_INFORMATION
        } else {
            value.len() as CK_ULONG
        };
        assert_eq!(
            (after[i].type_, after[i].ulValueLen),
            (*ty, expected),
            "nested entry {i}"
        );
    }
    for (a, b) in after.iter().zip(before).skip(entries.len()) {
        assert_eq!(
            (a.type_, a.ulValueLen),
            (b.type_, b.ulValueLen),
            "wrote past the nested answer"
        );
    }
    problem
}

/// Parses a mechanism the way C_SignInit / C_VerifyInit / C_DigestInit /
/// C_EncryptInit / C_WrapKey / C_UnwrapKey / C_DeriveKey do.
///
/// The first byte picks the shape: a parameter of any bytes and size
/// (even), or a `CK_ECDH1_DERIVE_PARAMS`, `CK_RSA_PKCS_OAEP_PARAMS` or
/// `CK_GCM_PARAMS` built from the rest, with inner pointers NULL or into a
/// buffer and any lengths.
pub fn mechanism_parameters(data: &[u8]) {
    let mut input = Bytes(data);
    match input.u8() % 8 {
        1 | 3 => {
            ecdh1_structure(input);
        }
        5 => {
            oaep_structure(input);
        }
        7 => {
            gcm_structure(input);
        }
        _ => flat_parameter(input),
    }
    assert!(mechanism(std::ptr::null()).is_err());
}

/// True when a parser would read pointers out of this parameter: only
/// structures built by this module may reach those parsers.
fn holds_pointers(ty: CK_ULONG, ptr: *const u8, len: CK_ULONG) -> bool {
    let size = match ty {
        cryptoki_sys::CKM_RSA_PKCS_OAEP => size_of::<CK_RSA_PKCS_OAEP_PARAMS>(),
        cryptoki_sys::CKM_AES_GCM => size_of::<CK_GCM_PARAMS>(),
        cryptoki_sys::CKM_ECDH1_DERIVE => size_of::<CK_ECDH1_DERIVE_PARAMS>(),
        _ => return false,
    };
    !ptr.is_null() && len == size as CK_ULONG
}

/// Any type, a parameter of any bytes: the flat parsers.
fn flat_parameter(mut input: Bytes) {
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
    let no_parameter = ptr.is_null() && len == 0;
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
                    no_parameter || (!ptr.is_null() && len == eddsa_size),
                    "EdDSA with a parameter of another size"
                );
            } else {
                assert!(no_parameter, "parameter accepted where none fits");
            }
            let _ = parsed.scheme();
        }
        Err(Error::MechanismInvalid(t) | Error::MechanismParamInvalid(t)) => assert_eq!(t, ty),
        Err(e) => panic!("unexpected error {e:?}"),
    }
    if digest_mechanism(&raw).is_ok() {
        assert!(no_parameter, "digest accepted a parameter");
    }
    if holds_pointers(ty, ptr, len) {
        return;
    }
    // The wrap mechanisms: AES key wrap takes no IV (only the default one
    // is offered), whatever its size.
    match wrap_mechanism(&raw) {
        Ok(_) => assert!(
            no_parameter
                && matches!(
                    ty,
                    cryptoki_sys::CKM_AES_KEY_WRAP
                        | cryptoki_sys::CKM_AES_KEY_WRAP_PAD
                        | cryptoki_sys::CKM_AES_KEY_WRAP_KWP
                ),
            "wrap mechanism {ty:#x} accepted {len} parameter bytes"
        ),
        Err(Error::MechanismInvalid(t) | Error::MechanismParamInvalid(t)) => assert_eq!(t, ty),
        Err(e) => panic!("unexpected wrap error {e:?}"),
    }
    match cipher_params(&raw) {
        Ok(_) => {
            let want = match ty {
                cryptoki_sys::CKM_AES_CBC_PAD => 16,
                cryptoki_sys::CKM_AES_CTR => size_of::<cryptoki_sys::CK_AES_CTR_PARAMS>(),
                _ => panic!("cipher {ty:#x} accepted"),
            };
            assert!(!ptr.is_null() && len == want as CK_ULONG, "cipher IV size");
        }
        Err(Error::MechanismInvalid(t) | Error::MechanismParamInvalid(t)) => assert_eq!(t, ty),
        Err(e) => panic!("unexpected cipher error {e:?}"),
    }
    if ty == cryptoki_sys::CKM_ECDH1_DERIVE {
        assert_eq!(
            raw.ecdh1_params(),
            Err(Error::MechanismParamInvalid(ty)),
            "ECDH1 without its structure"
        );
    }
}

/// `size` bytes of `value` in a buffer with [`SLACK`] bytes after it, so
/// any declared length up to `size + SLACK` is honest.
fn struct_buffer<T>(value: T) -> Vec<u8> {
    let mut buf = vec![0u8; size_of::<T>() + SLACK];
    // SAFETY: the buffer holds at least `size_of::<T>()` bytes;
    // write_unaligned copes with any alignment.
    unsafe { std::ptr::write_unaligned(buf.as_mut_ptr().cast::<T>(), value) };
    buf
}

/// The application's mechanism over a structure in `param`, `len` bytes
/// of it declared.
fn raw_over(ty: CK_ULONG, param: &mut [u8], len: usize) -> RawMechanism {
    let m = CK_MECHANISM {
        mechanism: ty,
        pParameter: param.as_mut_ptr().cast(),
        ulParameterLen: len as CK_ULONG,
    };
    mechanism(&m).expect("a mechanism with a parameter")
}

/// `CK_ECDH1_DERIVE_PARAMS` as C_DeriveKey reads it. True when accepted.
fn ecdh1_structure(mut input: Bytes) -> bool {
    let ty = cryptoki_sys::CKM_ECDH1_DERIVE;
    let kdf = input.pick(&KDFS);
    let mut buf = vec![0u8; usize::from(input.u8())];
    let shared = input.region(buf.len());
    let public = input.region(buf.len());
    let len = input.struct_len(size_of::<CK_ECDH1_DERIVE_PARAMS>());
    input.rest_into(&mut buf);
    let base = buf.as_mut_ptr();
    let ((p_shared, shared_len), (p_public, public_len)) =
        (shared.resolve(base), public.resolve(base));
    let mut param = struct_buffer(CK_ECDH1_DERIVE_PARAMS {
        kdf,
        ulSharedDataLen: shared_len,
        pSharedData: p_shared,
        ulPublicDataLen: public_len,
        pPublicData: p_public,
    });
    let raw = raw_over(ty, &mut param, len);
    let expected = match (shared.expected(&buf), public.expected(&buf)) {
        (Some(s), Some(p)) if !p.is_empty() && len == size_of::<CK_ECDH1_DERIVE_PARAMS>() => {
            Some((s, p))
        }
        _ => None,
    };
    match (raw.ecdh1_params(), expected) {
        (Ok(got), Some((s, p))) => {
            assert_eq!(
                (got.kdf, &got.shared_data[..], &got.public_data[..]),
                (kdf, s, p)
            );
            true
        }
        (Err(e), None) => {
            assert_eq!(e, Error::MechanismParamInvalid(ty));
            false
        }
        (got, expected) => panic!("ECDH1 parameters: {got:?}, expected {expected:?}"),
    }
}

/// `CK_RSA_PKCS_OAEP_PARAMS` as C_WrapKey / C_UnwrapKey and C_EncryptInit
/// read it. True when accepted.
fn oaep_structure(mut input: Bytes) -> bool {
    let ty = cryptoki_sys::CKM_RSA_PKCS_OAEP;
    let (hash, mgf, source) = (
        input.pick(&OAEP_VALUES),
        input.pick(&OAEP_VALUES),
        input.pick(&OAEP_VALUES),
    );
    let mut buf = vec![0u8; usize::from(input.u8())];
    let label = input.region(buf.len());
    let len = input.struct_len(size_of::<CK_RSA_PKCS_OAEP_PARAMS>());
    input.rest_into(&mut buf);
    let (p_label, label_len) = label.resolve(buf.as_mut_ptr());
    let mut param = struct_buffer(CK_RSA_PKCS_OAEP_PARAMS {
        hashAlg: hash,
        mgf,
        source,
        pSourceData: p_label.cast(),
        ulSourceDataLen: label_len,
    });
    let raw = raw_over(ty, &mut param, len);
    let readable = label
        .expected(&buf)
        .filter(|_| len == size_of::<CK_RSA_PKCS_OAEP_PARAMS>());
    let crypt = crypt_mechanism(&raw);
    let wrap = wrap_mechanism(&raw);
    match (&crypt, &wrap) {
        (
            Ok(Crypt::Oaep { label: a, .. }),
            Ok(mesign_proto::WrapMechanism::RsaOaep { label: b, .. }),
        ) => {
            let want = readable.expect("OAEP accepted a parameter it cannot read");
            assert_eq!((&a[..], &b[..]), (want, want), "the label");
            true
        }
        (Err(e), Err(f)) => {
            assert_eq!(
                (e, f),
                (
                    &Error::MechanismParamInvalid(ty),
                    &Error::MechanismParamInvalid(ty)
                )
            );
            false
        }
        _ => panic!("encrypting and wrapping disagree: {crypt:?} / {wrap:?}"),
    }
}

/// `CK_GCM_PARAMS` as C_EncryptInit reads it. True when accepted.
fn gcm_structure(mut input: Bytes) -> bool {
    let ty = cryptoki_sys::CKM_AES_GCM;
    let (iv_bits, tag_bits) = (input.ulong() % 256, input.pick(&[96, 128, 0, 64]));
    let mut buf = vec![0u8; usize::from(input.u8())];
    let iv = input.region(buf.len());
    let aad = input.region(buf.len());
    let len = input.struct_len(size_of::<CK_GCM_PARAMS>());
    input.rest_into(&mut buf);
    let base = buf.as_mut_ptr();
    let ((p_iv, iv_len), (p_aad, aad_len)) = (iv.resolve(base), aad.resolve(base));
    let mut param = struct_buffer(CK_GCM_PARAMS {
        pIv: p_iv,
        ulIvLen: iv_len,
        ulIvBits: iv_bits,
        pAAD: p_aad,
        ulAADLen: aad_len,
        ulTagBits: tag_bits,
    });
    let raw = raw_over(ty, &mut param, len);
    let readable = match (iv.expected(&buf), aad.expected(&buf)) {
        (Some(i), Some(a)) if len == size_of::<CK_GCM_PARAMS>() => Some((i, a)),
        _ => None,
    };
    match (raw.gcm_params(), readable) {
        (Ok(p), Some((i, a))) => assert_eq!((&p.iv[..], &p.aad[..]), (i, a)),
        (Err(e), None) => assert_eq!(e, Error::MechanismParamInvalid(ty)),
        (got, want) => panic!("GCM parameters: {got:?}, expected {want:?}"),
    }
    match cipher_params(&raw) {
        Ok(_) => {
            let (i, _) = readable.expect("GCM accepted a parameter it cannot read");
            assert!(i.len() == 12 && tag_bits == 128, "GCM IV or tag size");
            true
        }
        Err(e) => {
            assert_eq!(e, Error::MechanismParamInvalid(ty));
            false
        }
    }
}

/// Seed inputs for `c_mechanism`: each structure well formed, with NULL
/// inner pointers and lengths, and flat parameters for the wrap and
/// cipher mechanisms. The second value says whether the structure parses.
pub fn mechanism_seeds() -> Vec<(Vec<u8>, bool)> {
    let inside = |off: u16, len: u16| {
        let mut r = vec![2];
        r.extend_from_slice(&off.to_le_bytes());
        r.extend_from_slice(&len.to_le_bytes());
        r
    };
    let null_with = |len: u64| {
        let mut r = vec![1];
        r.extend_from_slice(&len.to_le_bytes());
        r
    };
    let table = |table: &[CK_ULONG], value: CK_ULONG| {
        let i = table
            .iter()
            .position(|&v| v == value)
            .expect("in the table");
        vec![(i as u8) << 1]
    };
    let data: Vec<u8> = (0..=255).collect();
    let point: Vec<u8> = [&[4u8][..], &[0x11; 64]].concat();
    let mut seeds = Vec::new();
    // ECDH1 with shared data and a P-256 point; with a NULL shared data
    // that claims bytes; with no public data.
    for (shared, public, ok) in [
        (inside(0, 4), inside(4, 65), true),
        (null_with(16), inside(4, 65), false),
        (vec![0], inside(4, 65), true),
        (inside(0, 4), null_with(65), false),
        (inside(0, 4), vec![0], false),
    ] {
        let seed = [
            &[1u8][..],
            &table(&KDFS, cryptoki_sys::CKD_SHA256_KDF),
            &[80],
            &shared,
            &public,
            &[0],
            b"info",
            &point,
        ]
        .concat();
        seeds.push((seed, ok));
    }
    // OAEP (SHA-256, MGF1-SHA-256, a label; then a NULL label with a
    // length) and GCM (12-byte IV, 128-bit tag; then a NULL AAD with a
    // length).
    for (label, ok) in [(inside(0, 5), true), (null_with(5), false)] {
        let seed = [
            &[5u8][..],
            &table(&OAEP_VALUES, cryptoki_sys::CKM_SHA256),
            &table(&OAEP_VALUES, cryptoki_sys::CKG_MGF1_SHA256),
            &table(&OAEP_VALUES, cryptoki_sys::CKZ_DATA_SPECIFIED),
            &[16],
            &label,
            &[0],
            b"label",
        ]
        .concat();
        seeds.push((seed, ok));
    }
    for (aad, ok) in [(inside(12, 4), true), (null_with(4), false)] {
        let seed = [
            &[7u8][..],
            &96u64.to_le_bytes(),
            &[2],
            &[32],
            &inside(0, 12),
            &aad,
            &[0],
            &data[..16],
        ]
        .concat();
        seeds.push((seed, ok));
    }
    // Flat: AES key wrap with an 8-byte IV (refused) and without, CBC-PAD
    // with its IV, ECDH1 with a parameter of the wrong size.
    for (ty, param) in [
        (cryptoki_sys::CKM_AES_KEY_WRAP, inside(0, 8)),
        (cryptoki_sys::CKM_AES_KEY_WRAP_PAD, vec![0]),
        (cryptoki_sys::CKM_AES_CBC_PAD, inside(0, 16)),
        (cryptoki_sys::CKM_ECDH1_DERIVE, inside(0, 39)),
    ] {
        let seed = [
            &[0u8][..],
            &table(&MECHANISMS, ty),
            &[40],
            &param,
            &data[..40],
        ]
        .concat();
        seeds.push((seed, true));
    }
    seeds
}

/// Seed inputs for `c_template`: an unwrap template whose
/// CKA_UNWRAP_TEMPLATE holds two entries, one with a NULL value; a
/// nested template claiming a partial entry; one nesting a template.
pub fn template_seeds() -> Vec<Vec<u8>> {
    let idx = |ty: CK_ULONG| {
        let i = TYPES.iter().position(|&v| v == ty).expect("in the table");
        (i as u8) << 1
    };
    let inside = |off: u16, len: u16| {
        let mut r = vec![2];
        r.extend_from_slice(&off.to_le_bytes());
        r.extend_from_slice(&len.to_le_bytes());
        r
    };
    let header = |count: u8| [&[count, 1][..], &64u16.to_le_bytes()].concat();
    let values = [&[1u8][..], b"wrapped-key", &[0; 52]].concat();
    let token_and_label = [
        &[idx(cryptoki_sys::CKA_TOKEN)][..],
        &inside(0, 1),
        &[idx(cryptoki_sys::CKA_LABEL)],
        &[0],
    ]
    .concat();
    vec![
        [
            &header(2)[..],
            &[idx(cryptoki_sys::CKA_LABEL)],
            &inside(1, 11),
            &[idx(cryptoki_sys::CKA_UNWRAP_TEMPLATE), 1, 2],
            &token_and_label,
            &[0, 3, 1],
            &values,
        ]
        .concat(),
        [
            &header(1)[..],
            &[idx(cryptoki_sys::CKA_WRAP_TEMPLATE), 1, 2],
            &token_and_label,
            &[0xC0, 30, 0, 2, 1],
            &values,
        ]
        .concat(),
        [
            &header(1)[..],
            &[idx(cryptoki_sys::CKA_DERIVE_TEMPLATE), 1, 1],
            &[idx(cryptoki_sys::CKA_WRAP_TEMPLATE)],
            &inside(0, 16),
            &[0, 0, 1],
            &values,
        ]
        .concat(),
    ]
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
        let mut pss = vec![0u8, 0, 30, 2, 0, 0, 24, 0];
        pss.extend_from_slice(&[0; 24]);
        mechanism_parameters(&pss);
    }

    #[test]
    fn seeds_reach_the_structures_they_describe() {
        for (seed, ok) in mechanism_seeds() {
            mechanism_parameters(&seed);
            let accepted = match seed[0] % 8 {
                1 | 3 => ecdh1_structure(Bytes(&seed[1..])),
                5 => oaep_structure(Bytes(&seed[1..])),
                7 => gcm_structure(Bytes(&seed[1..])),
                _ => true,
            };
            assert_eq!(accepted, ok, "seed {seed:?}");
        }
        let converted: Vec<bool> = template_seeds()
            .iter()
            .map(|seed| template_went_to_wire(seed))
            .collect();
        // Whole entries convert; a partial entry and a nested nested
        // template do not.
        assert_eq!(converted, [true, false, false]);
    }

    #[test]
    fn nested_templates_go_to_the_wire_one_level_deep() {
        let seeds = template_seeds();
        let mut input = Bytes(&seeds[0]);
        let count = usize::from(input.u8());
        let _ = (input.u8(), input.u16());
        let shapes: Vec<Shape> = (0..count)
            .map(|_| {
                let ty = input.pick(&TYPES);
                input.shape(ty, 64)
            })
            .collect();
        let Shape::Nested {
            inner, declared, ..
        } = &shapes[1]
        else {
            panic!("the unwrap template is not nested");
        };
        assert_eq!(inner.len(), 2);
        assert_eq!(*declared, 2 * size_of::<CK_ATTRIBUTE>());
    }
}
