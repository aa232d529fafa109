//! Attribute values between the C form (`CK_ULONG` of the host's width) and
//! the wire form of [`mesign_proto::attr`].

use cryptoki_sys::{CK_ATTRIBUTE_TYPE, CK_BBOOL, CK_ULONG};
use mesign_proto::attr::{self, AttrKind};
use mesign_proto::Attribute;

use crate::error::Error;
use crate::ffi::EntryValue;

const ULONG: usize = size_of::<CK_ULONG>();

fn c_ulong(bytes: &[u8]) -> Option<u64> {
    Some(CK_ULONG::from_ne_bytes(bytes.try_into().ok()?))
}

/// Converts one attribute value from the application into the wire form.
/// A nested template arrives resolved (see [`entry_to_wire`]); as plain
/// bytes it is a template nested two deep, which is refused.
pub(crate) fn to_wire(ty: CK_ATTRIBUTE_TYPE, value: &[u8]) -> Result<Attribute, Error> {
    let invalid = Error::AttributeValueInvalid(ty);
    let value = match attr::kind(ty) {
        AttrKind::Bool if value.len() == size_of::<CK_BBOOL>() => attr::bool_value(value[0] != 0),
        AttrKind::Ulong => attr::ulong_value(c_ulong(value).ok_or(invalid)?),
        AttrKind::UlongArray if value.len() % ULONG == 0 => attr::ulong_array_value(
            &value
                .chunks_exact(ULONG)
                .filter_map(c_ulong)
                .collect::<Vec<_>>(),
        ),
        AttrKind::Date if value.is_empty() || value.len() == 8 => value.to_vec(),
        AttrKind::Bytes => value.to_vec(),
        AttrKind::Bool | AttrKind::UlongArray | AttrKind::Date | AttrKind::AttributeArray => {
            return Err(invalid)
        }
    };
    Ok(Attribute { ty, value })
}

/// Converts one template entry, as `ffi` read it, into the wire form: a
/// nested template (CKA_WRAP_TEMPLATE, CKA_UNWRAP_TEMPLATE) entry by
/// entry, one level deep.
pub(crate) fn entry_to_wire(ty: CK_ATTRIBUTE_TYPE, value: &EntryValue) -> Result<Attribute, Error> {
    let inner = match value {
        EntryValue::Bytes(bytes) => return to_wire(ty, bytes),
        EntryValue::Nested(inner) => inner.as_ref(),
    };
    let inner = inner
        .ok_or(Error::AttributeValueInvalid(ty))?
        .iter()
        .map(|&(ty, v)| to_wire(ty, v))
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(Attribute {
        ty,
        value: attr::attribute_array_value(&inner),
    })
}

/// Converts a template from the application into the wire form.
pub(crate) fn template_to_wire(
    entries: &[(CK_ATTRIBUTE_TYPE, EntryValue)],
) -> Result<Vec<Attribute>, Error> {
    entries
        .iter()
        .map(|(ty, v)| entry_to_wire(*ty, v))
        .collect()
}

/// Converts a value from the daemon into the C form; a malformed wire value
/// means the daemon misbehaved.
pub(crate) fn from_wire(ty: CK_ATTRIBUTE_TYPE, value: &[u8]) -> Result<Vec<u8>, Error> {
    let to_c = |v: u64| {
        CK_ULONG::try_from(v)
            .map(CK_ULONG::to_ne_bytes)
            .map_err(|_| Error::Transport)
    };
    Ok(match attr::kind(ty) {
        AttrKind::Bool => vec![attr::read_bool(value).ok_or(Error::Transport)? as CK_BBOOL],
        AttrKind::Ulong => to_c(attr::read_ulong(value).ok_or(Error::Transport)?)?.to_vec(),
        AttrKind::UlongArray => {
            let mut out = Vec::new();
            for v in attr::read_ulong_array(value).ok_or(Error::Transport)? {
                out.extend_from_slice(&to_c(v)?);
            }
            out
        }
        AttrKind::Date | AttrKind::Bytes | AttrKind::AttributeArray => value.to_vec(),
    })
}

/// Converts a nested template from the daemon into C-form entries.
pub(crate) fn nested_from_wire(value: &[u8]) -> Result<Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>, Error> {
    attr::read_attribute_array(value)
        .ok_or(Error::Transport)?
        .into_iter()
        .map(|a| Ok((a.ty, from_wire(a.ty, &a.value)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki_sys::*;

    fn ulongs(v: &[CK_ULONG]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_ne_bytes()).collect()
    }

    #[test]
    fn c_form_round_trips_through_the_wire() {
        for (ty, c) in [
            (CKA_SIGN, vec![CK_TRUE]),
            (CKA_CLASS, ulongs(&[CKO_PRIVATE_KEY])),
            (
                CKA_ALLOWED_MECHANISMS,
                ulongs(&[CKM_ECDSA, CKM_ECDSA_SHA256]),
            ),
            (CKA_LABEL, b"my key".to_vec()),
            (CKA_START_DATE, b"20250101".to_vec()),
        ] {
            let wire = to_wire(ty, &c).unwrap();
            assert_eq!(from_wire(ty, &wire.value).unwrap(), c, "attribute {ty:#x}");
        }
        assert_eq!(
            to_wire(CKA_CLASS, &ulongs(&[CKO_DATA])).unwrap().value,
            0u64.to_le_bytes()
        );
    }

    #[test]
    fn wrong_c_sizes_are_value_invalid() {
        assert_eq!(
            to_wire(CKA_SIGN, &[1, 0]).unwrap_err(),
            Error::AttributeValueInvalid(CKA_SIGN)
        );
        assert_eq!(
            to_wire(CKA_CLASS, &[1, 2, 3, 4]).unwrap_err(),
            Error::AttributeValueInvalid(CKA_CLASS)
        );
        assert!(to_wire(CKA_ALLOWED_MECHANISMS, &[0; 9]).is_err());
        assert!(to_wire(CKA_END_DATE, b"2025").is_err());
        // A nested template comes resolved by `ffi`; as bytes (nested
        // twice) or malformed it is invalid.
        assert!(to_wire(CKA_WRAP_TEMPLATE, &[0; 5]).is_err());
        assert_eq!(
            entry_to_wire(CKA_WRAP_TEMPLATE, &EntryValue::Nested(None)).unwrap_err(),
            Error::AttributeValueInvalid(CKA_WRAP_TEMPLATE)
        );
        let empty = entry_to_wire(CKA_WRAP_TEMPLATE, &EntryValue::Nested(Some(vec![]))).unwrap();
        assert_eq!(attr::read_attribute_array(&empty.value), Some(vec![]));
        let inner = vec![(CKA_SENSITIVE, &[1u8][..]), (CKA_LABEL, &b"k"[..])];
        let nested = entry_to_wire(CKA_UNWRAP_TEMPLATE, &EntryValue::Nested(Some(inner))).unwrap();
        assert_eq!(
            attr::read_attribute_array(&nested.value),
            Some(vec![
                Attribute {
                    ty: CKA_SENSITIVE,
                    value: attr::bool_value(true)
                },
                Attribute {
                    ty: CKA_LABEL,
                    value: b"k".to_vec()
                }
            ])
        );
        let twice = vec![(CKA_WRAP_TEMPLATE, &[][..])];
        assert!(entry_to_wire(CKA_UNWRAP_TEMPLATE, &EntryValue::Nested(Some(twice))).is_err());
        let bad_inner = vec![(CKA_SENSITIVE, &[1u8, 1][..])];
        assert_eq!(
            entry_to_wire(CKA_UNWRAP_TEMPLATE, &EntryValue::Nested(Some(bad_inner))).unwrap_err(),
            Error::AttributeValueInvalid(CKA_SENSITIVE)
        );
        assert_eq!(from_wire(CKA_CLASS, &[1]).unwrap_err(), Error::Transport);
    }
}
