//! Attribute templates: reading the application's `CK_ATTRIBUTE` arrays and
//! filling them for C_GetAttributeValue.

use std::ptr;

use cryptoki_sys::{CK_ATTRIBUTE, CK_ATTRIBUTE_TYPE, CK_ULONG, CK_UNAVAILABLE_INFORMATION};

use crate::error::Error;

/// The answer for one entry of a C_GetAttributeValue template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AttrAnswer {
    /// The value in the C form the application expects.
    Value(Vec<u8>),
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

    /// Type and value bytes of every entry, for templates that carry values.
    /// A NULL value with a non-zero length is a broken pointer argument,
    /// `CKR_ARGUMENTS_BAD`, as a NULL template with a count is: no value of
    /// the attribute was offered to be judged.
    pub(crate) fn entries(&self) -> Result<Vec<(CK_ATTRIBUTE_TYPE, &[u8])>, Error> {
        (0..self.count)
            .map(|i| {
                let a = self.entry(i);
                let value = super::input(a.pValue.cast::<u8>().cast_const(), a.ulValueLen)?;
                Ok((a.type_, value))
            })
            .collect()
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
        assert_eq!(e, vec![(CKA_ID, &[1u8, 2][..]), (CKA_LABEL, &[][..])]);
        attrs[1].ulValueLen = 4;
        let t = Template::new(attrs.as_mut_ptr(), 2).unwrap();
        assert_eq!(t.entries().unwrap_err(), Error::ArgumentsBad);
        assert!(Template::new(ptr::null_mut(), 1).is_err());
    }
}
