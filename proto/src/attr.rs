//! The wire form of attribute values and the kind of each attribute type.
//!
//! The module converts between the C representation (`CK_ULONG` of the
//! host's width) and the wire form here; the daemon validates and stores the
//! wire form. Both sides use [`kind`] so they agree on every type.

use cryptoki_sys::*;

/// How an attribute's value is represented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrKind {
    /// `CK_BBOOL`: one byte, 0 or 1 (any non-zero byte is read as true).
    Bool,
    /// `CK_ULONG` and its aliases: eight bytes little-endian on the wire.
    Ulong,
    /// An array of `CK_MECHANISM_TYPE` (CKA_ALLOWED_MECHANISMS).
    UlongArray,
    /// `CK_DATE`: eight ASCII digits YYYYMMDD, or empty.
    Date,
    /// A `CK_ATTRIBUTE` array (wrap/unwrap/derive templates); not yet
    /// accepted by the daemon.
    AttributeArray,
    /// Bytes or UTF-8 text, passed through unchanged.
    Bytes,
}

/// The representation of attribute type `ty`. Unknown and vendor types are
/// [`AttrKind::Bytes`]; the daemon rejects the types it does not know.
pub fn kind(ty: u64) -> AttrKind {
    match ty as CK_ATTRIBUTE_TYPE {
        CKA_TOKEN
        | CKA_PRIVATE
        | CKA_TRUSTED
        | CKA_SENSITIVE
        | CKA_ENCRYPT
        | CKA_DECRYPT
        | CKA_WRAP
        | CKA_UNWRAP
        | CKA_SIGN
        | CKA_SIGN_RECOVER
        | CKA_VERIFY
        | CKA_VERIFY_RECOVER
        | CKA_DERIVE
        | CKA_EXTRACTABLE
        | CKA_LOCAL
        | CKA_NEVER_EXTRACTABLE
        | CKA_ALWAYS_SENSITIVE
        | CKA_MODIFIABLE
        | CKA_COPYABLE
        | CKA_DESTROYABLE
        | CKA_ALWAYS_AUTHENTICATE
        | CKA_WRAP_WITH_TRUSTED
        | CKA_RESET_ON_INIT
        | CKA_HAS_RESET
        | CKA_COLOR
        | CKA_OTP_USER_IDENTIFIER => AttrKind::Bool,
        CKA_CLASS
        | CKA_CERTIFICATE_TYPE
        | CKA_KEY_TYPE
        | CKA_MODULUS_BITS
        | CKA_VALUE_LEN
        | CKA_KEY_GEN_MECHANISM
        | CKA_CERTIFICATE_CATEGORY
        | CKA_JAVA_MIDP_SECURITY_DOMAIN
        | CKA_NAME_HASH_ALGORITHM
        | CKA_PRIME_BITS
        | CKA_SUBPRIME_BITS
        | CKA_VALUE_BITS
        | CKA_MECHANISM_TYPE
        | CKA_HW_FEATURE_TYPE
        | CKA_PROFILE_ID
        | CKA_PIXEL_X
        | CKA_PIXEL_Y
        | CKA_RESOLUTION
        | CKA_CHAR_ROWS
        | CKA_CHAR_COLUMNS
        | CKA_BITS_PER_PIXEL
        | CKA_OTP_FORMAT
        | CKA_OTP_LENGTH
        | CKA_OTP_TIME_INTERVAL
        | CKA_OTP_CHALLENGE_REQUIREMENT
        | CKA_OTP_TIME_REQUIREMENT
        | CKA_OTP_COUNTER_REQUIREMENT
        | CKA_OTP_PIN_REQUIREMENT
        | CKA_OTP_USER_FRIENDLY_MODE => AttrKind::Ulong,
        CKA_ALLOWED_MECHANISMS => AttrKind::UlongArray,
        CKA_START_DATE | CKA_END_DATE => AttrKind::Date,
        CKA_WRAP_TEMPLATE | CKA_UNWRAP_TEMPLATE | CKA_DERIVE_TEMPLATE => AttrKind::AttributeArray,
        _ => AttrKind::Bytes,
    }
}

/// Wire form of a boolean.
pub fn bool_value(v: bool) -> Vec<u8> {
    vec![v as u8]
}

/// Wire form of a `CK_ULONG`.
pub fn ulong_value(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// Wire form of an array of `CK_ULONG`.
pub fn ulong_array_value(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Reads a wire boolean; `None` if the value is not exactly one byte.
pub fn read_bool(v: &[u8]) -> Option<bool> {
    match v {
        [b] => Some(*b != 0),
        _ => None,
    }
}

/// Reads a wire `CK_ULONG`; `None` if the value is not exactly eight bytes.
pub fn read_ulong(v: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(v.try_into().ok()?))
}

/// Reads a wire `CK_ULONG` array; `None` if the length is not a multiple of
/// eight.
pub fn read_ulong_array(v: &[u8]) -> Option<Vec<u64>> {
    if v.len() % 8 != 0 {
        return None;
    }
    Some(
        v.chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
    )
}

/// Wire form of a nested template (CKA_WRAP_TEMPLATE, CKA_UNWRAP_TEMPLATE):
/// the CBOR encoding of its attributes, each in its own wire form.
pub fn attribute_array_value(v: &[crate::Attribute]) -> Vec<u8> {
    minicbor::to_vec(v).expect("encoding into a Vec is infallible")
}

/// Reads a wire nested template; `None` if it does not decode.
pub fn read_attribute_array(v: &[u8]) -> Option<Vec<crate::Attribute>> {
    minicbor::decode(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_common_attributes() {
        assert_eq!(kind(CKA_SIGN), AttrKind::Bool);
        assert_eq!(kind(CKA_CLASS), AttrKind::Ulong);
        assert_eq!(kind(CKA_ALLOWED_MECHANISMS), AttrKind::UlongArray);
        assert_eq!(kind(CKA_LABEL), AttrKind::Bytes);
        assert_eq!(kind(CKA_START_DATE), AttrKind::Date);
    }

    #[test]
    fn ulong_round_trips_and_rejects_bad_lengths() {
        assert_eq!(read_ulong(&ulong_value(0x1234)), Some(0x1234));
        assert_eq!(read_ulong(&[1, 2, 3]), None);
        assert_eq!(read_bool(&bool_value(true)), Some(true));
        assert_eq!(read_bool(&[]), None);
        assert_eq!(
            read_ulong_array(&ulong_array_value(&[1, 2])),
            Some(vec![1, 2])
        );
        assert_eq!(read_ulong_array(&[0; 9]), None);
    }
}
