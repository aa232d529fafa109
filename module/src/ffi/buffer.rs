//! Input slices, single output values and the two-call output buffer.

use std::ptr;

use cryptoki_sys::CK_ULONG;

use crate::error::Error;

/// Borrows `len` bytes at `ptr` as input. NULL is accepted only with a zero
/// length (an empty input).
pub(crate) fn input<'a>(ptr: *const u8, len: CK_ULONG) -> Result<&'a [u8], Error> {
    input_array(ptr, len)
}

/// Borrows a PIN. NULL means "use the protected authentication path",
/// which the token does not have (CKF_PROTECTED_AUTHENTICATION_PATH is
/// clear), so it is `CKR_ARGUMENTS_BAD` rather than an empty PIN that would
/// count as a wrong one.
pub(crate) fn pin<'a>(ptr: *const u8, len: CK_ULONG) -> Result<&'a [u8], Error> {
    if ptr.is_null() {
        return Err(Error::ArgumentsBad);
    }
    input_array(ptr, len)
}

/// Borrows `len` elements at `ptr` as input; NULL only with a zero length.
fn input_array<'a, T>(ptr: *const T, len: CK_ULONG) -> Result<&'a [T], Error> {
    let len = usize::try_from(len).map_err(|_| Error::ArgumentsBad)?;
    if ptr.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(Error::ArgumentsBad)
        };
    }
    if len == 0 {
        return Ok(&[]);
    }
    // SAFETY: non-NULL, and the caller promises `len` valid elements for the
    // duration of the call (PKCS#11 calling contract).
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Borrows `len` writable bytes at `ptr`; NULL only with a zero length.
pub(crate) fn output<'a>(ptr: *mut u8, len: CK_ULONG) -> Result<&'a mut [u8], Error> {
    let len = usize::try_from(len).map_err(|_| Error::ArgumentsBad)?;
    if ptr.is_null() {
        return if len == 0 {
            Ok(&mut [])
        } else {
            Err(Error::ArgumentsBad)
        };
    }
    // SAFETY: non-NULL, and the caller promises `len` writable bytes that no
    // one else accesses during the call (PKCS#11 calling contract).
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// Stores `value` at the application's output pointer `out` (which may point
/// to uninitialised memory, so it is written, never read).
pub(crate) fn write_out<T>(out: *mut T, value: T) -> Result<(), Error> {
    if out.is_null() {
        return Err(Error::ArgumentsBad);
    }
    // SAFETY: non-NULL and, by the calling contract, valid and aligned for T.
    unsafe { ptr::write(out, value) };
    Ok(())
}

/// What an output buffer is ready for after the needed length is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fill {
    /// The application passed NULL and only wanted the length (now stored).
    LengthOnly,
    /// The buffer is large enough; the result may be computed and written.
    Ready,
}

/// An output array with its in/out element count: the PKCS#11 two-call
/// convention (NULL → `CKR_OK` + length; too small →
/// `CKR_BUFFER_TOO_SMALL` + length; else copy) lives here and nowhere else.
pub(crate) struct OutBuf<T> {
    data: *mut T,
    len: *mut CK_ULONG,
}

impl<T: Copy> OutBuf<T> {
    /// Wraps an output array; the length pointer must not be NULL.
    pub(crate) fn new(data: *mut T, len: *mut CK_ULONG) -> Result<Self, Error> {
        if len.is_null() {
            return Err(Error::ArgumentsBad);
        }
        Ok(OutBuf { data, len })
    }

    /// Declares that the result will have `needed` elements. Answers a
    /// length query or a too-small buffer by storing `needed`.
    pub(crate) fn prepare(&mut self, needed: usize) -> Result<Fill, Error> {
        if self.data.is_null() {
            self.store_len(needed);
            return Ok(Fill::LengthOnly);
        }
        if self.capacity() < needed {
            self.store_len(needed);
            return Err(Error::BufferTooSmall { needed });
        }
        Ok(Fill::Ready)
    }

    /// True for a length query (a NULL data pointer).
    pub(crate) fn is_length_query(&self) -> bool {
        self.data.is_null()
    }

    /// Copies `items` out (after the same checks as [`Self::prepare`]).
    pub(crate) fn put(&mut self, items: &[T]) -> Result<Fill, Error> {
        if self.prepare(items.len())? == Fill::LengthOnly {
            return Ok(Fill::LengthOnly);
        }
        // SAFETY: `prepare` checked that `data` is non-NULL and that the
        // application declared room for at least `items.len()` elements;
        // `items` is our own memory, so the ranges do not overlap.
        unsafe { ptr::copy_nonoverlapping(items.as_ptr(), self.data, items.len()) };
        self.store_len(items.len());
        Ok(Fill::Ready)
    }

    /// The element count the application declared.
    fn capacity(&self) -> usize {
        // SAFETY: `len` is non-NULL (checked in `new`); when the data pointer
        // is non-NULL the application must have initialised the count.
        let cap = unsafe { ptr::read(self.len) };
        usize::try_from(cap).unwrap_or(usize::MAX)
    }

    fn store_len(&mut self, n: usize) {
        // SAFETY: `len` is non-NULL and writable by the calling contract.
        unsafe { ptr::write(self.len, n as CK_ULONG) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_buffer_answers_the_length() {
        let mut len: CK_ULONG = 0;
        let mut out = OutBuf::<u8>::new(ptr::null_mut(), &mut len).unwrap();
        assert_eq!(out.put(&[1, 2, 3]), Ok(Fill::LengthOnly));
        assert_eq!(len, 3);
    }

    #[test]
    fn small_buffer_is_refused_with_the_length() {
        let mut buf = [0u8; 2];
        let mut len: CK_ULONG = 2;
        let mut out = OutBuf::new(buf.as_mut_ptr(), &mut len).unwrap();
        assert_eq!(
            out.put(&[1, 2, 3]),
            Err(Error::BufferTooSmall { needed: 3 })
        );
        assert_eq!(len, 3);
        assert_eq!(buf, [0, 0]);
    }

    #[test]
    fn big_enough_buffer_is_filled_and_length_set() {
        let mut buf = [0u8; 8];
        let mut len: CK_ULONG = 8;
        let mut out = OutBuf::new(buf.as_mut_ptr(), &mut len).unwrap();
        assert_eq!(out.put(&[7, 8, 9]), Ok(Fill::Ready));
        assert_eq!(len, 3);
        assert_eq!(&buf[..3], &[7, 8, 9]);
    }

    #[test]
    fn null_length_pointer_is_bad_arguments() {
        assert!(matches!(
            OutBuf::<u8>::new(ptr::null_mut(), ptr::null_mut()),
            Err(Error::ArgumentsBad)
        ));
        assert_eq!(
            write_out::<u64>(ptr::null_mut(), 1),
            Err(Error::ArgumentsBad)
        );
    }

    #[test]
    fn a_null_pin_is_bad_arguments_even_when_empty() {
        assert_eq!(pin(ptr::null(), 0), Err(Error::ArgumentsBad));
        assert_eq!(pin(b"1234".as_ptr(), 4), Ok(&b"1234"[..]));
    }

    #[test]
    fn inputs_check_null_against_length() {
        assert_eq!(input(ptr::null(), 0), Ok(&[][..]));
        assert_eq!(input(ptr::null(), 4), Err(Error::ArgumentsBad));
        let data = [1u8, 2];
        assert_eq!(input(data.as_ptr(), 2), Ok(&data[..]));
    }
}
