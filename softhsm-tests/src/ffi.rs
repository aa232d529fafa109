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
    CKR_OK, CK_ATTRIBUTE, CK_ATTRIBUTE_TYPE, CK_FALSE, CK_FUNCTION_LIST, CK_MECHANISM,
    CK_MECHANISM_TYPE, CK_OBJECT_HANDLE, CK_RV, CK_SESSION_HANDLE, CK_SLOT_ID, CK_TOKEN_INFO,
    CK_ULONG, CK_UNAVAILABLE_INFORMATION,
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

/// An attribute type and its value in C form (a `CK_BBOOL` byte, a
/// native-endian `CK_ULONG`, bytes).
pub type CAttribute = (CK_ATTRIBUTE_TYPE, Vec<u8>);

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

/// The shape of C_Sign, C_Encrypt and C_Decrypt: input bytes in, output
/// bytes out with the two-call length convention.
type OneShot =
    unsafe extern "C" fn(CK_SESSION_HANDLE, *mut u8, CK_ULONG, *mut u8, *mut CK_ULONG) -> CK_RV;

/// Calls a single-part function of [`OneShot`]'s shape with `output`.
fn one_shot(f: OneShot, session: CK_SESSION_HANDLE, data: &[u8], output: Output) -> Returned {
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

    /// C_GetObjectSize (the `cryptoki` crate has no wrapper for it).
    pub fn object_size(
        &self,
        session: CK_SESSION_HANDLE,
        object: cryptoki_sys::CK_OBJECT_HANDLE,
    ) -> (CK_RV, cryptoki_sys::CK_ULONG) {
        let f = self
            .functions
            .C_GetObjectSize
            .expect("C_GetObjectSize in the function list");
        let mut size: cryptoki_sys::CK_ULONG = 0;
        // SAFETY: `size` is a valid, writable CK_ULONG for the call.
        let rv = unsafe { f(session, object, &mut size) };
        (rv, size)
    }

    /// C_Sign on an already-initialized operation with a caller-chosen output.
    pub fn sign(&self, session: CK_SESSION_HANDLE, data: &[u8], output: Output) -> Returned {
        let f = self.functions.C_Sign.expect("C_Sign in the function list");
        one_shot(f, session, data, output)
    }

    /// C_Decrypt on an already-initialized operation with a caller-chosen
    /// output.
    pub fn decrypt(&self, session: CK_SESSION_HANDLE, data: &[u8], output: Output) -> Returned {
        let f = self
            .functions
            .C_Decrypt
            .expect("C_Decrypt in the function list");
        one_shot(f, session, data, output)
    }

    /// C_Encrypt on an already-initialized operation with a caller-chosen
    /// output.
    pub fn encrypt(&self, session: CK_SESSION_HANDLE, data: &[u8], output: Output) -> Returned {
        let f = self
            .functions
            .C_Encrypt
            .expect("C_Encrypt in the function list");
        one_shot(f, session, data, output)
    }

    /// C_EncryptInit (`encrypt`) or C_DecryptInit with CKM_AES_CTR, which
    /// the `cryptoki` crate does not offer.
    pub fn aes_ctr_init(
        &self,
        session: CK_SESSION_HANDLE,
        key: CK_OBJECT_HANDLE,
        counter_bits: CK_ULONG,
        counter: [u8; 16],
        encrypt: bool,
    ) -> CK_RV {
        let mut params = cryptoki_sys::CK_AES_CTR_PARAMS {
            ulCounterBits: counter_bits,
            cb: counter,
        };
        let mut mechanism = cryptoki_sys::CK_MECHANISM {
            mechanism: cryptoki_sys::CKM_AES_CTR,
            pParameter: (&mut params as *mut cryptoki_sys::CK_AES_CTR_PARAMS).cast(),
            ulParameterLen: std::mem::size_of::<cryptoki_sys::CK_AES_CTR_PARAMS>() as CK_ULONG,
        };
        let f = if encrypt {
            self.functions.C_EncryptInit
        } else {
            self.functions.C_DecryptInit
        }
        .expect("C_EncryptInit / C_DecryptInit in the function list");
        // SAFETY: `mechanism` and the parameters it points to live across
        // the call; the module only reads them.
        unsafe { f(session, &mut mechanism, key) }
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

    /// C_CreateObject with attributes in their C form (`flat`) and nested
    /// templates such as CKA_UNWRAP_TEMPLATE (`nested`: the outer type and
    /// its entries), which the `cryptoki` crate cannot express.
    pub fn create_object_nested(
        &self,
        session: CK_SESSION_HANDLE,
        flat: &[CAttribute],
        nested: &[(CK_ATTRIBUTE_TYPE, Vec<CAttribute>)],
    ) -> (CK_RV, CK_OBJECT_HANDLE) {
        let f = self
            .functions
            .C_CreateObject
            .expect("C_CreateObject in the function list");
        let entry = |(ty, value): &CAttribute| CK_ATTRIBUTE {
            type_: *ty,
            pValue: value.as_ptr() as *mut _,
            ulValueLen: value.len() as CK_ULONG,
        };
        let inner: Vec<Vec<CK_ATTRIBUTE>> = nested
            .iter()
            .map(|(_, entries)| entries.iter().map(entry).collect())
            .collect();
        let mut template: Vec<CK_ATTRIBUTE> = flat.iter().map(entry).collect();
        for ((ty, _), entries) in nested.iter().zip(&inner) {
            template.push(CK_ATTRIBUTE {
                type_: *ty,
                pValue: entries.as_ptr() as *mut _,
                ulValueLen: std::mem::size_of_val(entries.as_slice()) as CK_ULONG,
            });
        }
        let mut handle: CK_OBJECT_HANDLE = 0;
        // SAFETY: every entry points at a live value of exactly ulValueLen
        // bytes (`flat`'s values, or the CK_ATTRIBUTE arrays in `inner`,
        // whose entries point into `nested`), all of which outlive the call
        // and are only read; `handle` is a valid, writable location.
        let rv = unsafe {
            f(
                session,
                template.as_mut_ptr(),
                template.len() as CK_ULONG,
                &mut handle,
            )
        };
        (rv, handle)
    }

    /// C_WrapKey with a parameterless mechanism and a raw output buffer,
    /// for length queries and CKR_BUFFER_TOO_SMALL.
    pub fn wrap_key(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        wrapping: CK_OBJECT_HANDLE,
        key: CK_OBJECT_HANDLE,
        output: Output,
    ) -> Returned {
        let f = self
            .functions
            .C_WrapKey
            .expect("C_WrapKey in the function list");
        let mut mechanism = CK_MECHANISM {
            mechanism,
            pParameter: ptr::null_mut(),
            ulParameterLen: 0,
        };
        let mut buffer = match output {
            Output::Null => Vec::new(),
            Output::Bytes(n) => vec![0u8; n],
        };
        let mut len = buffer.len() as CK_ULONG;
        let out_ptr = match output {
            Output::Null => ptr::null_mut(),
            Output::Bytes(_) => buffer.as_mut_ptr(),
        };
        // SAFETY: `mechanism` is a valid CK_MECHANISM without parameter;
        // `out_ptr` is NULL or valid for `len` writable bytes; `len` is a
        // valid writable CK_ULONG.
        let rv = unsafe { f(session, &mut mechanism, wrapping, key, out_ptr, &mut len) };
        let bytes = match output {
            Output::Bytes(n) if rv == CKR_OK && (len as usize) <= n => {
                buffer.truncate(len as usize);
                buffer
            }
            _ => Vec::new(),
        };
        Returned { rv, len, bytes }
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

/// Which of the four `CK_C_INITIALIZE_ARGS` mutex callbacks to pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MutexCallbacks {
    /// All four NULL.
    None,
    /// All four set (working spin locks).
    All,
    /// Only CreateMutex and LockMutex set: an inconsistent set.
    Partial,
}

/// A `CK_C_INITIALIZE_ARGS` as a test wants it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitArgs {
    /// The mutex callbacks.
    pub mutexes: MutexCallbacks,
    /// `flags` (CKF_OS_LOCKING_OK, CKF_LIBRARY_CANT_CREATE_OS_THREADS).
    pub flags: cryptoki_sys::CK_FLAGS,
    /// Pass a non-NULL `pReserved`.
    pub reserved_non_null: bool,
}

// Application mutexes for C_Initialize: a spin lock per mutex. A module
// that honours application locking calls these; they must work.
extern "C" fn create_mutex(out: *mut *mut std::ffi::c_void) -> CK_RV {
    if out.is_null() {
        return cryptoki_sys::CKR_ARGUMENTS_BAD;
    }
    let lock = Box::into_raw(Box::new(std::sync::atomic::AtomicBool::new(false)));
    // SAFETY: `out` is non-NULL and points to the module's pointer slot.
    unsafe { *out = lock.cast() };
    CKR_OK
}

extern "C" fn destroy_mutex(mutex: *mut std::ffi::c_void) -> CK_RV {
    if !mutex.is_null() {
        // SAFETY: made by `create_mutex` from a Box and destroyed once.
        drop(unsafe { Box::from_raw(mutex.cast::<std::sync::atomic::AtomicBool>()) });
    }
    CKR_OK
}

extern "C" fn lock_mutex(mutex: *mut std::ffi::c_void) -> CK_RV {
    // SAFETY: made by `create_mutex` and alive until `destroy_mutex`.
    let lock = unsafe { &*mutex.cast::<std::sync::atomic::AtomicBool>() };
    while lock
        .compare_exchange_weak(
            false,
            true,
            std::sync::atomic::Ordering::Acquire,
            std::sync::atomic::Ordering::Relaxed,
        )
        .is_err()
    {
        std::hint::spin_loop();
    }
    CKR_OK
}

extern "C" fn unlock_mutex(mutex: *mut std::ffi::c_void) -> CK_RV {
    // SAFETY: as in `lock_mutex`.
    let lock = unsafe { &*mutex.cast::<std::sync::atomic::AtomicBool>() };
    lock.store(false, std::sync::atomic::Ordering::Release);
    CKR_OK
}

impl RawModule {
    /// The version in the table C_GetFunctionList returned.
    pub fn function_list_version(&self) -> cryptoki_sys::CK_VERSION {
        self.functions.version
    }

    /// C_Initialize with NULL (`None`) or the given arguments.
    pub fn initialize_with(&self, args: Option<InitArgs>) -> CK_RV {
        let f = self
            .functions
            .C_Initialize
            .expect("C_Initialize in the function list");
        let Some(args) = args else {
            // SAFETY: NULL is allowed: no arguments.
            return unsafe { f(ptr::null_mut()) };
        };
        let (create, destroy, lock, unlock): (
            cryptoki_sys::CK_CREATEMUTEX,
            cryptoki_sys::CK_DESTROYMUTEX,
            cryptoki_sys::CK_LOCKMUTEX,
            cryptoki_sys::CK_UNLOCKMUTEX,
        ) = match args.mutexes {
            MutexCallbacks::None => (None, None, None, None),
            MutexCallbacks::All => (
                Some(create_mutex),
                Some(destroy_mutex),
                Some(lock_mutex),
                Some(unlock_mutex),
            ),
            MutexCallbacks::Partial => (Some(create_mutex), None, Some(lock_mutex), None),
        };
        let mut reserved = 0u8;
        let mut c_args = cryptoki_sys::CK_C_INITIALIZE_ARGS {
            CreateMutex: create,
            DestroyMutex: destroy,
            LockMutex: lock,
            UnlockMutex: unlock,
            flags: args.flags,
            pReserved: if args.reserved_non_null {
                (&mut reserved as *mut u8).cast()
            } else {
                ptr::null_mut()
            },
        };
        // SAFETY: `c_args` is a valid CK_C_INITIALIZE_ARGS for the call; the
        // callbacks are plain functions that live for the whole process.
        unsafe { f((&mut c_args as *mut cryptoki_sys::CK_C_INITIALIZE_ARGS).cast()) }
    }

    /// C_Finalize with a NULL or a non-NULL `pReserved`.
    pub fn finalize_with(&self, reserved_non_null: bool) -> CK_RV {
        let f = self
            .functions
            .C_Finalize
            .expect("C_Finalize in the function list");
        let mut reserved = 0u8;
        let p = if reserved_non_null {
            (&mut reserved as *mut u8).cast()
        } else {
            ptr::null_mut()
        };
        // SAFETY: `p` is NULL or points to a live byte for the call.
        unsafe { f(p) }
    }

    /// C_GetInfo.
    pub fn info(&self) -> (CK_RV, cryptoki_sys::CK_INFO) {
        let f = self.functions.C_GetInfo.expect("C_GetInfo");
        let mut info = cryptoki_sys::CK_INFO::default();
        // SAFETY: `info` is a valid, writable CK_INFO.
        let rv = unsafe { f(&mut info) };
        (rv, info)
    }

    /// Calls a spread of functions with valid buffers and arbitrary
    /// handles, for checking what they answer before C_Initialize.
    pub fn spread_of_calls(&self) -> Vec<(&'static str, CK_RV)> {
        let f = &self.functions;
        let mut count: CK_ULONG = 4;
        let mut slots = [0 as CK_SLOT_ID; 4];
        let mut session: CK_SESSION_HANDLE = 0;
        let mut slot_info = cryptoki_sys::CK_SLOT_INFO::default();
        let mut token = CK_TOKEN_INFO::default();
        let mut session_info = cryptoki_sys::CK_SESSION_INFO::default();
        let mut random = [0u8; 8];
        let mut mechanism = cryptoki_sys::CK_MECHANISM {
            mechanism: cryptoki_sys::CKM_SHA256,
            pParameter: ptr::null_mut(),
            ulParameterLen: 0,
        };
        let pin = *b"123456";
        // SAFETY: every pointer refers to a live local of the right type and
        // length for the duration of each call.
        unsafe {
            vec![
                ("C_GetInfo", self.info().0),
                (
                    "C_GetSlotList",
                    f.C_GetSlotList.unwrap()(CK_FALSE, slots.as_mut_ptr(), &mut count),
                ),
                ("C_GetSlotInfo", f.C_GetSlotInfo.unwrap()(0, &mut slot_info)),
                ("C_GetTokenInfo", f.C_GetTokenInfo.unwrap()(0, &mut token)),
                (
                    "C_OpenSession",
                    f.C_OpenSession.unwrap()(
                        0,
                        cryptoki_sys::CKF_SERIAL_SESSION,
                        ptr::null_mut(),
                        None,
                        &mut session,
                    ),
                ),
                ("C_CloseSession", f.C_CloseSession.unwrap()(1)),
                ("C_CloseAllSessions", f.C_CloseAllSessions.unwrap()(0)),
                (
                    "C_GetSessionInfo",
                    f.C_GetSessionInfo.unwrap()(1, &mut session_info),
                ),
                (
                    "C_Login",
                    f.C_Login.unwrap()(
                        1,
                        cryptoki_sys::CKU_USER,
                        pin.as_ptr() as *mut u8,
                        pin.len() as CK_ULONG,
                    ),
                ),
                ("C_Logout", f.C_Logout.unwrap()(1)),
                ("C_DigestInit", f.C_DigestInit.unwrap()(1, &mut mechanism)),
                (
                    "C_GenerateRandom",
                    f.C_GenerateRandom.unwrap()(1, random.as_mut_ptr(), 8),
                ),
                ("C_Finalize", f.C_Finalize.unwrap()(ptr::null_mut())),
            ]
        }
    }

    /// The 3.0 interfaces (name, version) from C_GetInterfaceList, or None
    /// when the library exports no such function.
    pub fn interfaces(&self) -> Option<(CK_RV, Vec<(String, cryptoki_sys::CK_VERSION)>)> {
        if self._library.C_GetInterfaceList.is_err() {
            return None;
        }
        let mut count: CK_ULONG = 0;
        // SAFETY: NULL list with a valid count pointer asks for the count.
        let rv = unsafe {
            self._library
                .C_GetInterfaceList(ptr::null_mut(), &mut count)
        };
        if rv != CKR_OK {
            return Some((rv, Vec::new()));
        }
        let mut list = vec![
            cryptoki_sys::CK_INTERFACE {
                pInterfaceName: ptr::null_mut(),
                pFunctionList: ptr::null_mut(),
                flags: 0,
            };
            count as usize
        ];
        // SAFETY: `list` holds `count` writable CK_INTERFACE entries.
        let rv = unsafe {
            self._library
                .C_GetInterfaceList(list.as_mut_ptr(), &mut count)
        };
        let found = list
            .iter()
            .take(count as usize)
            .map(|i| {
                // SAFETY: the module filled each entry with a NUL-terminated
                // name and a function list that starts with its CK_VERSION,
                // both static in the loaded library.
                unsafe {
                    (
                        std::ffi::CStr::from_ptr(i.pInterfaceName.cast())
                            .to_string_lossy()
                            .into_owned(),
                        *i.pFunctionList.cast::<cryptoki_sys::CK_VERSION>(),
                    )
                }
            })
            .collect();
        Some((rv, found))
    }

    /// The "PKCS 11" 3.0 function list from C_GetInterface, or None when the
    /// library exports no C_GetInterface (a 2.40 module).
    fn functions_3_0(&self) -> Option<cryptoki_sys::CK_FUNCTION_LIST_3_0> {
        if self._library.C_GetInterface.is_err() {
            return None;
        }
        let mut name = *b"PKCS 11\0";
        let mut version = cryptoki_sys::CK_VERSION { major: 3, minor: 0 };
        let mut iface: *mut cryptoki_sys::CK_INTERFACE = ptr::null_mut();
        // SAFETY: `name` is NUL-terminated, `version` and `iface` are valid
        // and writable for the call.
        let rv = unsafe {
            self._library
                .C_GetInterface(name.as_mut_ptr(), &mut version, &mut iface, 0)
        };
        assert_eq!(rv, CKR_OK, "C_GetInterface(\"PKCS 11\", 3.0)");
        // SAFETY: on CKR_OK the module pointed `iface` at its static
        // description of the 3.0 interface, whose function list is a
        // CK_FUNCTION_LIST_3_0; copying it out avoids holding the pointer.
        Some(unsafe {
            *(*iface)
                .pFunctionList
                .cast::<cryptoki_sys::CK_FUNCTION_LIST_3_0>()
        })
    }

    /// C_LoginUser (3.0) with `username` NULL when None; None when the
    /// module has no 3.0 interface.
    pub fn login_user(
        &self,
        session: CK_SESSION_HANDLE,
        user_type: cryptoki_sys::CK_USER_TYPE,
        pin: &[u8],
        username: Option<&[u8]>,
    ) -> Option<CK_RV> {
        let f = self.functions_3_0()?.C_LoginUser.expect("C_LoginUser");
        let (name, name_len) = match username {
            Some(n) => (n.as_ptr() as *mut u8, n.len() as CK_ULONG),
            None => (ptr::null_mut(), 0),
        };
        // SAFETY: `pin` and `username` are valid for their lengths and only
        // read; a NULL username comes with length 0.
        Some(unsafe {
            f(
                session,
                user_type,
                pin.as_ptr() as *mut u8,
                pin.len() as CK_ULONG,
                name,
                name_len,
            )
        })
    }

    /// C_SessionCancel (3.0); None when the module has no 3.0 interface.
    pub fn session_cancel(
        &self,
        session: CK_SESSION_HANDLE,
        flags: cryptoki_sys::CK_FLAGS,
    ) -> Option<CK_RV> {
        let f = self
            .functions_3_0()?
            .C_SessionCancel
            .expect("C_SessionCancel");
        // SAFETY: plain values only.
        Some(unsafe { f(session, flags) })
    }

    /// C_GetInterface(NULL name, NULL version, flags): the version of the
    /// table handed out, or the error.
    pub fn default_interface(
        &self,
        flags: cryptoki_sys::CK_FLAGS,
    ) -> Option<Result<cryptoki_sys::CK_VERSION, CK_RV>> {
        if self._library.C_GetInterface.is_err() {
            return None;
        }
        let mut iface: *mut cryptoki_sys::CK_INTERFACE = ptr::null_mut();
        // SAFETY: NULL name and version are allowed; `iface` is writable.
        let rv = unsafe {
            self._library
                .C_GetInterface(ptr::null_mut(), ptr::null_mut(), &mut iface, flags)
        };
        if rv != CKR_OK {
            return Some(Err(rv));
        }
        // SAFETY: on CKR_OK the module pointed `iface` at its interface
        // description, whose function list starts with its CK_VERSION.
        Some(Ok(unsafe {
            *(*iface).pFunctionList.cast::<cryptoki_sys::CK_VERSION>()
        }))
    }
}

/// Forks; the child runs `child` and ends with its return value as exit
/// status (without running the parent's exit handlers); the parent waits
/// and returns that status, or None when the child did not exit normally.
///
/// Only for test processes that run this alone: a fork while other threads
/// hold locks may leave the child unable to take them.
pub fn in_forked_child(child: impl FnOnce() -> i32) -> Option<i32> {
    // SAFETY: see above; the child only runs `child` and then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(99);
        // SAFETY: ends the child without unwinding into the parent's state.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child with a valid status pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid, "waitpid");
    libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
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
