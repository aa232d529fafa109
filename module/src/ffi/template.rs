//! Attribute templates: reading the application's `CK_ATTRIBUTE` arrays and
//! filling them for C_GetAttributeValue.

use std::ptr;

use cryptoki_sys::{CK_ATTRIBUTE, CK_ATTRIBUTE_TYPE, CK_ULONG, CK_UNAVAILABLE_INFORMATION};
use mesign_proto::attr::{self, AttrKind};

use crate::error::Error;

/// The value of one entry of an application's template, read out of the
/// application's memory here, so that no code outside `ffi` follows a
/// pointer found inside value bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryValue<'a> {
    /// The value bytes as given.
    Bytes(&'a [u8]),
    /// A nested template (CKA_WRAP_TEMPLATE, CKA_UNWRAP_TEMPLATE): the
    /// type and value bytes of each entry of the application's inner
    /// `CK_ATTRIBUTE` array, one level deep (an inner nested template
    /// stays bytes, for the caller to refuse). `None` if the value is not
    /// a whole array of entries or an inner entry is NULL with a length:
    /// the attribute's value is then invalid, which the caller reports in
    /// template order.
    Nested(Option<Vec<(CK_ATTRIBUTE_TYPE, &'a [u8])>>),
}

/// The answer for one entry of a C_GetAttributeValue template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AttrAnswer {
    /// The value in the C form the application expects.
    Value(Vec<u8>),
    /// A nested template (CKA_WRAP_TEMPLATE, CKA_UNWRAP_TEMPLATE): each
    /// entry's type and value in C form, filled into the application's
    /// own `CK_ATTRIBUTE` array.
    Nested(Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>),
    /// The attribute may not be revealed.
    Sensitive,
    /// The object has no such attribute.
    Invalid,
}

/// An application's attribute template.
pub(crate) struct Template {
    attrs: *mut CK_ATTRIBUTE,
    count: usize,
}

impl Template {
    /// Wraps `count` attributes at `attrs`; NULL only with a zero count.
    pub(crate) fn new(attrs: *mut CK_ATTRIBUTE, count: CK_ULONG) -> Result<Self, Error> {
        let count = usize::try_from(count).map_err(|_| Error::ArgumentsBad)?;
        if attrs.is_null() && count != 0 {
            return Err(Error::ArgumentsBad);
        }
        Ok(Template { attrs, count })
    }

    fn entry(&self, i: usize) -> CK_ATTRIBUTE {
        debug_assert!(i < self.count);
        // SAFETY: `attrs` is non-NULL when `count > 0` and holds `count`
        // attributes by the calling contract; `i < count`.
        unsafe { ptr::read_unaligned(self.attrs.add(i)) }
    }

    /// The requested attribute types, in order.
    pub(crate) fn types(&self) -> Vec<CK_ATTRIBUTE_TYPE> {
        (0..self.count).map(|i| self.entry(i).type_).collect()
    }

    /// Type and value of every entry, for templates that carry values;
    /// nested templates are resolved into their entries (see
    /// [`EntryValue`]). A NULL value with a non-zero length is a broken
    /// pointer argument, `CKR_ARGUMENTS_BAD`, as a NULL template with a
    /// count is: no value of the attribute was offered to be judged.
    pub(crate) fn entries(&self) -> Result<Vec<(CK_ATTRIBUTE_TYPE, EntryValue<'_>)>, Error> {
        let flat = (0..self.count)
            .map(|i| {
                let a = self.entry(i);
                let value = super::input(a.pValue.cast::<u8>().cast_const(), a.ulValueLen)?;
                Ok((a.type_, value))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        // Every top-level pointer is judged before any nested one, so a
        // broken pointer argument wins over a malformed nested value.
        Ok(flat
            .into_iter()
            .map(|(ty, value)| match attr::kind(ty) {
                AttrKind::AttributeArray => (ty, EntryValue::Nested(nested_entries(value).ok())),
                _ => (ty, EntryValue::Bytes(value)),
            })
            .collect())
    }

    /// Fills every entry from `answers` (one per entry, in order) following
    /// the C_GetAttributeValue rules: sensitive and invalid entries and
    /// values that do not fit get `CK_UNAVAILABLE_INFORMATION`; NULL values
    /// get the length; the others are copied. All entries are handled; the
    /// first problem decides the return value.
    pub(crate) fn fill(&mut self, answers: &[AttrAnswer]) -> Result<(), Error> {
        if answers.len() != self.count {
            return Err(Error::Transport);
        }
        let mut result = Ok(());
        for (i, answer) in answers.iter().enumerate() {
            let a = self.entry(i);
            let (len, problem) = match answer {
                AttrAnswer::Sensitive => (
                    CK_UNAVAILABLE_INFORMATION,
                    Some(Error::AttributeSensitive(a.type_)),
                ),
                AttrAnswer::Invalid => (
                    CK_UNAVAILABLE_INFORMATION,
                    Some(Error::AttributeTypeInvalid(a.type_)),
                ),
                AttrAnswer::Value(v) if a.pValue.is_null() => (v.len() as CK_ULONG, None),
                AttrAnswer::Value(v) if (a.ulValueLen as usize) < v.len() => (
                    CK_UNAVAILABLE_INFORMATION,
                    Some(Error::BufferTooSmall { needed: v.len() }),
                ),
                AttrAnswer::Value(v) => {
                    // SAFETY: pValue is non-NULL and the application declared
                    // at least `v.len()` bytes there (checked just above).
                    unsafe { ptr::copy_nonoverlapping(v.as_ptr(), a.pValue.cast::<u8>(), v.len()) };
                    (v.len() as CK_ULONG, None)
                }
                AttrAnswer::Nested(entries) => fill_nested(&a, entries),
            };
            // SAFETY: entry `i` exists (see `entry`); only its length field
            // is written, in place.
            unsafe { ptr::addr_of_mut!((*self.attrs.add(i)).ulValueLen).write_unaligned(len) };
            if let (Some(p), Ok(())) = (problem, &result) {
                result = Err(p);
            }
        }
        result
    }
}

/// Fills an application's nested template (PKCS#11 3.0 §5.7): NULL gets
/// the array's length; an array too short is CKR_BUFFER_TOO_SMALL; else
/// each entry gets its type and, like a top-level entry, its length (NULL
/// value) or its value (CKR_BUFFER_TOO_SMALL if it does not fit). Returns
/// the outer length and the first problem.
fn fill_nested(
    outer: &CK_ATTRIBUTE,
    entries: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
) -> (CK_ULONG, Option<Error>) {
    let needed = entries.len() * size_of::<CK_ATTRIBUTE>();
    if outer.pValue.is_null() {
        return (needed as CK_ULONG, None);
    }
    if (outer.ulValueLen as usize) < needed {
        return (
            CK_UNAVAILABLE_INFORMATION,
            Some(Error::BufferTooSmall { needed }),
        );
    }
    let array = outer.pValue.cast::<CK_ATTRIBUTE>();
    let mut problem = None;
    for (i, (ty, value)) in entries.iter().enumerate() {
        // SAFETY: the application declared `ulValueLen >= needed` bytes at
        // pValue, so entry `i < entries.len()` lies inside its array.
        let entry = unsafe { ptr::read_unaligned(array.add(i)) };
        let len = if entry.pValue.is_null() {
            value.len() as CK_ULONG
        } else if (entry.ulValueLen as usize) < value.len() {
            problem.get_or_insert(Error::BufferTooSmall {
                needed: value.len(),
            });
            CK_UNAVAILABLE_INFORMATION
        } else {
            // SAFETY: the entry's pValue is non-NULL with at least
            // `value.len()` bytes declared (checked just above).
            unsafe {
                ptr::copy_nonoverlapping(value.as_ptr(), entry.pValue.cast::<u8>(), value.len())
            };
            value.len() as CK_ULONG
        };
        // SAFETY: entry `i` lies inside the application's array (above);
        // only its type and length fields are written, in place.
        unsafe {
            ptr::addr_of_mut!((*array.add(i)).type_).write_unaligned(*ty);
            ptr::addr_of_mut!((*array.add(i)).ulValueLen).write_unaligned(len);
        }
    }
    (needed as CK_ULONG, problem)
}

/// Type and value bytes of every entry of a nested template
/// (CKA_WRAP_TEMPLATE, CKA_UNWRAP_TEMPLATE): `value` is the application's
/// `CK_ATTRIBUTE` array as the outer template's value, so its length must
/// be a whole number of entries.
fn nested_entries(value: &[u8]) -> Result<Vec<(CK_ATTRIBUTE_TYPE, &[u8])>, Error> {
    let size = size_of::<CK_ATTRIBUTE>();
    if value.len() % size != 0 {
        return Err(Error::ArgumentsBad);
    }
    (0..value.len() / size)
        .map(|i| {
            // SAFETY: `value` holds `len / size` whole CK_ATTRIBUTE entries
            // (checked above); read_unaligned copes with any alignment.
            let a =
                unsafe { ptr::read_unaligned(value.as_ptr().add(i * size).cast::<CK_ATTRIBUTE>()) };
            let inner = super::input(a.pValue.cast::<u8>().cast_const(), a.ulValueLen)?;
            Ok((a.type_, inner))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki_sys::*;

    fn attr(ty: CK_ATTRIBUTE_TYPE, buf: &mut [u8]) -> CK_ATTRIBUTE {
        CK_ATTRIBUTE {
            type_: ty,
            pValue: buf.as_mut_ptr().cast(),
            ulValueLen: buf.len() as CK_ULONG,
        }
    }

    #[test]
    fn every_entry_is_handled() {
        let mut label = [0u8; 8];
        let mut small = [0u8; 2];
        let mut secret = [0u8; 16];
        let mut attrs = [
            attr(CKA_LABEL, &mut label),
            CK_ATTRIBUTE {
                type_: CKA_ID,
                pValue: ptr::null_mut(),
                ulValueLen: 0,
            },
            attr(CKA_VALUE, &mut secret),
            attr(CKA_MODULUS, &mut small),
            attr(0x8000_1234, &mut []),
        ];
        let mut t = Template::new(attrs.as_mut_ptr(), attrs.len() as CK_ULONG).unwrap();
        let answers = [
            AttrAnswer::Value(b"key".to_vec()),
            AttrAnswer::Value(vec![1, 2, 3, 4]),
            AttrAnswer::Sensitive,
            AttrAnswer::Value(vec![9; 3]),
            AttrAnswer::Invalid,
        ];
        assert_eq!(t.fill(&answers), Err(Error::AttributeSensitive(CKA_VALUE)));
        assert_eq!(attrs[0].ulValueLen, 3);
        assert_eq!(&label[..3], b"key");
        assert_eq!(attrs[1].ulValueLen, 4);
        assert_eq!(attrs[2].ulValueLen, CK_UNAVAILABLE_INFORMATION);
        assert_eq!(attrs[3].ulValueLen, CK_UNAVAILABLE_INFORMATION);
        assert_eq!(small, [0, 0]);
        assert_eq!(attrs[4].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    }

    #[test]
    fn too_small_alone_gives_buffer_too_small() {
        let mut small = [0u8; 1];
        let mut attrs = [attr(CKA_LABEL, &mut small)];
        let mut t = Template::new(attrs.as_mut_ptr(), 1).unwrap();
        assert_eq!(
            t.fill(&[AttrAnswer::Value(vec![1, 2])]),
            Err(Error::BufferTooSmall { needed: 2 })
        );
        assert_eq!(attrs[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    }

    #[test]
    fn nested_templates_are_read_and_filled() {
        let mut yes = [1u8];
        let mut label = *b"wrapped";
        let inner = [attr(CKA_SENSITIVE, &mut yes), attr(CKA_LABEL, &mut label)];
        // SAFETY: `inner` is a live array; viewed as its own bytes, as an
        // application's CK_ATTRIBUTE array arrives as an attribute value.
        let raw =
            unsafe { std::slice::from_raw_parts(inner.as_ptr().cast::<u8>(), size_of_val(&inner)) };
        assert_eq!(
            nested_entries(raw).unwrap(),
            vec![(CKA_SENSITIVE, &[1u8][..]), (CKA_LABEL, &b"wrapped"[..])]
        );
        assert_eq!(nested_entries(&raw[1..]).unwrap_err(), Error::ArgumentsBad);

        let answer = AttrAnswer::Nested(vec![
            (CKA_SENSITIVE, vec![1]),
            (CKA_LABEL, b"wrapped".to_vec()),
        ]);
        let mut flag = [0u8; 1];
        let mut short = [0u8; 3];
        let mut out = [attr(0, &mut flag), attr(0, &mut short)];
        let mut outer = [CK_ATTRIBUTE {
            type_: CKA_UNWRAP_TEMPLATE,
            pValue: ptr::null_mut(),
            ulValueLen: 0,
        }];
        let mut t = Template::new(outer.as_mut_ptr(), 1).unwrap();
        assert_eq!(t.fill(std::slice::from_ref(&answer)), Ok(()));
        assert_eq!(outer[0].ulValueLen as usize, size_of_val(&out));
        outer[0].pValue = out.as_mut_ptr().cast();
        let mut t = Template::new(outer.as_mut_ptr(), 1).unwrap();
        assert_eq!(
            t.fill(std::slice::from_ref(&answer)),
            Err(Error::BufferTooSmall { needed: 7 })
        );
        assert_eq!((out[0].type_, out[0].ulValueLen), (CKA_SENSITIVE, 1));
        assert_eq!(flag, [1]);
        assert_eq!(
            (out[1].type_, out[1].ulValueLen),
            (CKA_LABEL, CK_UNAVAILABLE_INFORMATION)
        );
        outer[0].ulValueLen = 8;
        let mut t = Template::new(outer.as_mut_ptr(), 1).unwrap();
        assert_eq!(
            t.fill(std::slice::from_ref(&answer)),
            Err(Error::BufferTooSmall {
                needed: size_of_val(&out)
            })
        );
    }

    #[test]
    fn entries_resolve_nested_templates_inside_ffi() {
        let mut yes = [1u8];
        let mut inner = [attr(CKA_SENSITIVE, &mut yes)];
        let mut label = *b"k";
        let mut odd = [0u8; 5];
        let mut attrs = [
            CK_ATTRIBUTE {
                type_: CKA_UNWRAP_TEMPLATE,
                pValue: inner.as_mut_ptr().cast(),
                ulValueLen: size_of_val(&inner) as CK_ULONG,
            },
            attr(CKA_LABEL, &mut label),
            attr(CKA_WRAP_TEMPLATE, &mut odd),
        ];
        let t = Template::new(attrs.as_mut_ptr(), 3).unwrap();
        assert_eq!(
            t.entries().unwrap(),
            vec![
                (
                    CKA_UNWRAP_TEMPLATE,
                    EntryValue::Nested(Some(vec![(CKA_SENSITIVE, &[1u8][..])]))
                ),
                (CKA_LABEL, EntryValue::Bytes(&b"k"[..])),
                (CKA_WRAP_TEMPLATE, EntryValue::Nested(None)),
            ]
        );
        // An inner entry NULL with a length makes the nested value invalid,
        // not the call's arguments bad.
        let mut broken = [CK_ATTRIBUTE {
            type_: CKA_SENSITIVE,
            pValue: ptr::null_mut(),
            ulValueLen: 1,
        }];
        let mut outer = [CK_ATTRIBUTE {
            type_: CKA_UNWRAP_TEMPLATE,
            pValue: broken.as_mut_ptr().cast(),
            ulValueLen: size_of_val(&broken) as CK_ULONG,
        }];
        let t = Template::new(outer.as_mut_ptr(), 1).unwrap();
        assert_eq!(
            t.entries().unwrap(),
            vec![(CKA_UNWRAP_TEMPLATE, EntryValue::Nested(None))]
        );
    }

    #[test]
    fn entries_read_values_and_reject_null_with_length() {
        let mut v = [1u8, 2];
        let mut attrs = [
            attr(CKA_ID, &mut v),
            CK_ATTRIBUTE {
                type_: CKA_LABEL,
                pValue: ptr::null_mut(),
                ulValueLen: 0,
            },
        ];
        let t = Template::new(attrs.as_mut_ptr(), 2).unwrap();
        let e = t.entries().unwrap();
        assert_eq!(
            e,
            vec![
                (CKA_ID, EntryValue::Bytes(&[1u8, 2][..])),
                (CKA_LABEL, EntryValue::Bytes(&[][..]))
            ]
        );
        attrs[1].ulValueLen = 4;
        let t = Template::new(attrs.as_mut_ptr(), 2).unwrap();
        assert_eq!(t.entries().unwrap_err(), Error::ArgumentsBad);
        assert!(Template::new(ptr::null_mut(), 1).is_err());
    }
}
