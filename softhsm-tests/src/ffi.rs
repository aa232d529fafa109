//! The suite's only unsafe code: direct calls into a module's function list,
//! and the libc `atexit` hook that stops daemons the suite started.
//!
//! `cryptoki` hides exactly the behaviour some cases must observe: it always
//! sizes output buffers itself (so CKR_BUFFER_TOO_SMALL is unreachable), trims
//! the blank padding of fixed-width strings, folds per-attribute results of
//! C_GetAttributeValue, and only finalizes by consuming the context. This
//! module opens the same shared object again (the dynamic loader hands back the
//! already-loaded copy, so state is shared with the `cryptoki` context) and
//! calls the function list with caller-chosen buffers.
#![allow(unsafe_code)]

use std::path::Path;
use std::ptr;

use cryptoki_sys::{
    CKR_OK, CK_ATTRIBUTE, CK_ATTRIBUTE_TYPE, CK_FUNCTION_LIST, CK_OBJECT_HANDLE, CK_RV,
    CK_SESSION_HANDLE, CK_SLOT_ID, CK_TOKEN_INFO, CK_ULONG, CK_UNAVAILABLE_INFORMATION,
};

/// An output buffer as a PKCS#11 caller passes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// NULL pointer: ask for the length.
    Null,
    /// A buffer of this many bytes.
    Bytes(usize),
}

/// What one output-producing call returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Returned {
    /// The return value.
    pub rv: CK_RV,
    /// The length the module wrote back.
    pub len: CK_ULONG,
    /// The buffer contents truncated to `len` when a buffer was passed and
    /// `len` fits in it; empty otherwise.
    pub bytes: Vec<u8>,
}

/// One attribute as C_GetAttributeValue left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawAttribute {
    /// `ulValueLen` after the call (`CK_UNAVAILABLE_INFORMATION` for unavailable).
    pub len: CK_ULONG,
    /// The value, when a buffer was passed and the length fits in it.
    pub value: Option<Vec<u8>>,
}

impl RawAttribute {
    /// Whether the module marked the attribute unavailable.
    pub fn unavailable(&self) -> bool {
        self.len == CK_UNAVAILABLE_INFORMATION
    }
}

/// A second handle on a loaded PKCS#11 module, for raw calls.
pub struct RawModule {
    // Keeps the shared object mapped while `functions` points into it.
    _library: cryptoki_sys::Pkcs11,
    functions: CK_FUNCTION_LIST,
}

impl RawModule {
    /// Opens `path` (the same path the `cryptoki` context was built from).
    pub fn open(path: &Path) -> Self {
        // SAFETY: loading a PKCS#11 module runs its constructors; the suite only
        // loads SoftHSMv2 and our own module, both of which the `cryptoki`
        // context has already loaded from the same path.
        let library = unsafe { cryptoki_sys::Pkcs11::new(path) }
            .unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()));
        assert!(
            library.C_GetFunctionList.is_ok(),
            "{} does not export C_GetFunctionList",
            path.display()
        );
        let mut list: *mut CK_FUNCTION_LIST = ptr::null_mut();
        // SAFETY: C_GetFunctionList takes a pointer to a pointer it fills in;
        // `list` is a valid, writable location.
        let rv = unsafe { library.C_GetFunctionList(&mut list) };
        assert_eq!(rv, CKR_OK, "C_GetFunctionList failed");
        assert!(!list.is_null(), "C_GetFunctionList returned NULL");
        // SAFETY: a successful C_GetFunctionList points at a static function
        // list that lives as long as the library stays loaded, which `library`
        // guarantees; copying it out avoids holding the raw pointer.
        let functions = unsafe { *list };
        Self {
            _library: library,
            functions,
        }
    }

    /// C_Sign on an already-initialized operation with a caller-chosen output.
    pub fn sign(&self, session: CK_SESSION_HANDLE, data: &[u8], output: Output) -> Returned {
        let f = self.functions.C_Sign.expect("C_Sign in the function list");
        let mut buffer = match output {
            Output::Null => Vec::new(),
            Output::Bytes(n) => vec![0u8; n],
        };
        let mut len: CK_ULONG = buffer.len() as CK_ULONG;
        let out_ptr = match output {
            Output::Null => ptr::null_mut(),
            Output::Bytes(_) => buffer.as_mut_ptr(),
        };
        // SAFETY: `data` is valid for `data.len()` bytes and only read;
        // `out_ptr` is NULL or valid for `len` writable bytes; `len` is a valid
        // writable CK_ULONG.
        let rv = unsafe {
            f(
                session,
                data.as_ptr() as *mut u8,
                data.len() as CK_ULONG,
                out_ptr,
                &mut len,
            )
        };
        let bytes = match output {
            Output::Bytes(n) if rv == CKR_OK && (len as usize) <= n => {
                buffer.truncate(len as usize);
                buffer
            }
            _ => Vec::new(),
        };
        Returned { rv, len, bytes }
    }

    /// C_GetTokenInfo, unparsed, so fixed-width fields keep their padding.
    pub fn token_info(&self, slot: CK_SLOT_ID) -> (CK_RV, CK_TOKEN_INFO) {
        let f = self
            .functions
            .C_GetTokenInfo
            .expect("C_GetTokenInfo in the function list");
        let mut info = CK_TOKEN_INFO::default();
        // SAFETY: `info` is a valid, writable CK_TOKEN_INFO.
        let rv = unsafe { f(slot, &mut info) };
        (rv, info)
    }

    /// C_GetAttributeValue with one template entry per `(type, output)`.
    pub fn attributes(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        request: &[(CK_ATTRIBUTE_TYPE, Output)],
    ) -> (CK_RV, Vec<RawAttribute>) {
        let f = self
            .functions
            .C_GetAttributeValue
            .expect("C_GetAttributeValue in the function list");
        let mut buffers: Vec<Vec<u8>> = request
            .iter()
            .map(|(_, out)| match out {
                Output::Null => Vec::new(),
                Output::Bytes(n) => vec![0u8; *n],
            })
            .collect();
        let mut template: Vec<CK_ATTRIBUTE> = request
            .iter()
            .zip(buffers.iter_mut())
            .map(|((type_, out), buf)| CK_ATTRIBUTE {
                type_: *type_,
                pValue: match out {
                    Output::Null => ptr::null_mut(),
                    Output::Bytes(_) => buf.as_mut_ptr().cast(),
                },
                ulValueLen: buf.len() as CK_ULONG,
            })
            .collect();
        // SAFETY: every template entry's pValue is NULL or points at a live
        // buffer of exactly ulValueLen bytes owned by `buffers`, which outlives
        // the call; the template pointer and count describe `template`.
        let rv = unsafe {
            f(
                session,
                object,
                template.as_mut_ptr(),
                template.len() as CK_ULONG,
            )
        };
        let attrs = template
            .iter()
            .zip(buffers)
            .zip(request)
            .map(|((entry, mut buf), (_, out))| {
                let value = match out {
                    Output::Bytes(n)
                        if entry.ulValueLen != CK_UNAVAILABLE_INFORMATION
                            && (entry.ulValueLen as usize) <= *n =>
                    {
                        buf.truncate(entry.ulValueLen as usize);
                        Some(buf)
                    }
                    _ => None,
                };
                RawAttribute {
                    len: entry.ulValueLen,
                    value,
                }
            })
            .collect();
        (rv, attrs)
    }

    /// C_Finalize(NULL), so a test can C_Initialize the same module again.
    pub fn finalize(&self) -> CK_RV {
        let f = self
            .functions
            .C_Finalize
            .expect("C_Finalize in the function list");
        // SAFETY: pReserved must be NULL, which it is.
        unsafe { f(ptr::null_mut()) }
    }
}

/// Runs `hook` when the process exits normally (libtest returns from `main`,
/// which ends in libc `exit`). Statics are never dropped, so this is the only
/// place a process-wide daemon can be stopped.
pub fn at_process_exit(hook: extern "C" fn()) {
    // SAFETY: `hook` is a plain `extern "C" fn()` with no captured state, as
    // atexit requires; it must not unwind, which its callers ensure.
    let rc = unsafe { libc::atexit(hook) };
    assert_eq!(rc, 0, "atexit refused the hook");
}
