//! The C boundary under hostile arguments (issue #6, item 7), through the
//! loaded `libmesign_pkcs11.so` and both of its function tables.
//!
//! Every entry point of the 2.40 and the 3.0 table is called with NULL
//! where the specification requires a pointer, NULL with a non-zero length
//! where that length describes input, and NULL output buffers with a
//! nonsense length where that is the legal length query. Before
//! C_Initialize every one of them must answer
//! CKR_CRYPTOKI_NOT_INITIALIZED (the three that work uninitialised:
//! CKR_ARGUMENTS_BAD); afterwards, on a valid session and valid keys so that
//! the bad pointer is the only fault, CKR_ARGUMENTS_BAD or the code the
//! README documents for a deliberately unsupported function. A panic raised
//! inside the module (a debug-build-only hook in C_Initialize) must come
//! back as CKR_GENERAL_ERROR with the host still running.
//!
//! Ours only: SoftHSMv2 dereferences several of these NULLs and would take
//! the test process down. One process for the file: initialisation state is
//! per process, so the two tests take turns.

use std::ffi::c_void;
use std::ptr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use cryptoki::object::Attribute;
use cryptoki_sys::*;
use softhsm_tests::binaries;
use softhsm_tests::daemon::Daemon;
use softhsm_tests::keys::{self, KeySpec};
use softhsm_tests::standalone::{load_module, only_slot, ready_session};
use softhsm_tests::verify::{assert_genuine, sha256, Curve};

/// The two tests change the process-wide initialisation state.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The vendor-defined C_Initialize flag that makes a debug build of the
/// module panic inside the call (`mesign_pkcs11::ffi::TEST_PANIC_FLAG`).
const TEST_PANIC_FLAG: CK_FLAGS = 0x8000_0000;

const GHOST_LABEL: &[u8] = b"c-boundary-ghost";

/// The module's two function tables, as a host gets them.
struct Tables {
    // Keeps the shared object mapped while the tables point into it.
    _library: Pkcs11Lib,
    v2: &'static CK_FUNCTION_LIST,
    v3: &'static CK_FUNCTION_LIST_3_0,
}

type Pkcs11Lib = cryptoki_sys::Pkcs11;

fn tables() -> Tables {
    let path = binaries::require(binaries::MESIGN_MODULE);
    // SAFETY: loads our own module (its constructors are trivial).
    let library = unsafe { cryptoki_sys::Pkcs11::new(&path) }.expect("load the module");
    let mut v2: *mut CK_FUNCTION_LIST = ptr::null_mut();
    // SAFETY: `v2` is a writable pointer slot.
    assert_eq!(unsafe { library.C_GetFunctionList(&mut v2) }, CKR_OK);
    let mut name = *b"PKCS 11\0";
    let mut version = CK_VERSION { major: 3, minor: 0 };
    let mut iface: *mut CK_INTERFACE = ptr::null_mut();
    // SAFETY: a NUL-terminated name, a valid version and a writable slot.
    let rv = unsafe { library.C_GetInterface(name.as_mut_ptr(), &mut version, &mut iface, 0) };
    assert_eq!(rv, CKR_OK, "C_GetInterface(PKCS 11, 3.0)");
    // SAFETY: both tables are statics of the library, which `_library`
    // keeps loaded (and the module is linked with -z nodelete).
    let (v2, v3) = unsafe {
        (
            &*v2,
            &*(*iface).pFunctionList.cast::<CK_FUNCTION_LIST_3_0>(),
        )
    };
    Tables {
        _library: library,
        v2,
        v3,
    }
}

/// A NULL pointer of whatever type the argument needs.
macro_rules! n {
    () => {
        ptr::null_mut()
    };
}

/// Calls a function-table entry.
macro_rules! call {
    ($table:expr, $name:ident ( $($arg:expr),* $(,)? )) => {{
        let f = $table.$name.expect(stringify!($name));
        // SAFETY: every pointer argument is NULL, or points to leaked
        // scratch memory of at least the length passed with it.
        unsafe { f($($arg),*) }
    }};
}

/// Handles and scratch memory the calls point into. Leaked: the calls
/// outlive any borrow a closure could hold, and a few KiB do not matter.
#[derive(Clone, Copy)]
struct Scratch {
    slot: CK_SLOT_ID,
    session: CK_SESSION_HANDLE,
    public: CK_OBJECT_HANDLE,
    private: CK_OBJECT_HANDLE,
    bytes: *mut u8,
    ulong: *mut CK_ULONG,
    handles: *mut CK_OBJECT_HANDLE,
    mechanism: *mut CK_MECHANISM,
    ecgen: *mut CK_MECHANISM,
    /// A valid data-object template (class, token, label).
    data_template: *mut CK_ATTRIBUTE,
    /// A valid EC key-pair template pair (public, private), 3 entries each.
    public_template: *mut CK_ATTRIBUTE,
    private_template: *mut CK_ATTRIBUTE,
    /// One entry whose value is NULL with a non-zero length.
    dangling_template: *mut CK_ATTRIBUTE,
}

fn leak<T>(v: Vec<T>) -> *mut T {
    Box::leak(v.into_boxed_slice()).as_mut_ptr()
}

fn attribute(type_: CK_ATTRIBUTE_TYPE, value: Vec<u8>) -> CK_ATTRIBUTE {
    let len = value.len() as CK_ULONG;
    CK_ATTRIBUTE {
        type_,
        pValue: leak(value).cast(),
        ulValueLen: len,
    }
}

impl Scratch {
    fn new(
        slot: CK_SLOT_ID,
        session: CK_SESSION_HANDLE,
        public: CK_OBJECT_HANDLE,
        private: CK_OBJECT_HANDLE,
    ) -> Self {
        let ulong_bytes = |v: CK_ULONG| v.to_ne_bytes().to_vec();
        Scratch {
            slot,
            session,
            public,
            private,
            bytes: leak(vec![0u8; 4096]),
            ulong: leak(vec![4096 as CK_ULONG]),
            handles: leak(vec![0 as CK_OBJECT_HANDLE; 16]),
            mechanism: leak(vec![CK_MECHANISM {
                mechanism: CKM_ECDSA,
                pParameter: ptr::null_mut(),
                ulParameterLen: 0,
            }]),
            ecgen: leak(vec![CK_MECHANISM {
                mechanism: CKM_EC_KEY_PAIR_GEN,
                pParameter: ptr::null_mut(),
                ulParameterLen: 0,
            }]),
            data_template: leak(vec![
                attribute(CKA_CLASS, ulong_bytes(CKO_DATA)),
                attribute(CKA_TOKEN, vec![CK_TRUE]),
                attribute(CKA_LABEL, GHOST_LABEL.to_vec()),
            ]),
            public_template: leak(vec![
                attribute(CKA_EC_PARAMS, Curve::P256.params_der()),
                attribute(CKA_TOKEN, vec![CK_TRUE]),
                attribute(CKA_LABEL, GHOST_LABEL.to_vec()),
            ]),
            private_template: leak(vec![
                attribute(CKA_SIGN, vec![CK_TRUE]),
                attribute(CKA_TOKEN, vec![CK_TRUE]),
                attribute(CKA_LABEL, GHOST_LABEL.to_vec()),
            ]),
            dangling_template: leak(vec![CK_ATTRIBUTE {
                type_: CKA_LABEL,
                pValue: ptr::null_mut(),
                ulValueLen: 5,
            }]),
        }
    }

    /// Resets the in/out length before a call that reads it.
    fn len(&self, n: CK_ULONG) -> *mut CK_ULONG {
        // SAFETY: `ulong` is leaked scratch memory, used by one thread.
        unsafe { *self.ulong = n };
        self.ulong
    }
}

/// One bad call: its label, the function it drives, what it returned and
/// what it must return once the library is initialised.
struct Case {
    function: &'static str,
    what: &'static str,
    rv: CK_RV,
    initialised: CK_RV,
}

/// The functions that work without C_Initialize.
const UNINITIALISED_OK: [&str; 3] = ["C_GetFunctionList", "C_GetInterfaceList", "C_GetInterface"];

const AB: CK_RV = CKR_ARGUMENTS_BAD;
/// Deliberately unsupported (README, "Deliberately not (yet) supported").
const FNS: CK_RV = CKR_FUNCTION_NOT_SUPPORTED;
/// Steps of an operation that is not active: the session state decides
/// before the pointers are looked at (the pointers are tested with the
/// operation active further down).
const NOT_ACTIVE: CK_RV = CKR_OPERATION_NOT_INITIALIZED;
const NULL_HANDLE: CK_SESSION_HANDLE = 0x7fff_dead;

/// Every single-call case for the entries both tables share, called through
/// `$t` (a `CK_FUNCTION_LIST` or `CK_FUNCTION_LIST_3_0`).
macro_rules! shared_cases {
    ($t:expr, $s:expr) => {{
        let t = $t;
        let s: Scratch = $s;
        let b = s.bytes;
        let h = s.handles;
        let pin = b"123456".as_ptr() as *mut u8;
        let case =
            |function: &'static str, what: &'static str, rv: CK_RV, initialised: CK_RV| Case {
                function,
                what,
                rv,
                initialised,
            };
        vec![
            case(
                "C_Finalize",
                "pReserved non-NULL",
                call!(t, C_Finalize(b.cast())),
                AB,
            ),
            case("C_GetInfo", "NULL", call!(t, C_GetInfo(n!())), AB),
            case(
                "C_GetFunctionList",
                "NULL",
                call!(t, C_GetFunctionList(n!())),
                AB,
            ),
            case(
                "C_GetSlotList",
                "NULL count",
                call!(t, C_GetSlotList(CK_TRUE, h, n!())),
                AB,
            ),
            case(
                "C_GetSlotList",
                "NULL list and count",
                call!(t, C_GetSlotList(CK_FALSE, n!(), n!())),
                AB,
            ),
            case(
                "C_GetSlotInfo",
                "NULL",
                call!(t, C_GetSlotInfo(s.slot, n!())),
                AB,
            ),
            case(
                "C_GetTokenInfo",
                "NULL",
                call!(t, C_GetTokenInfo(s.slot, n!())),
                AB,
            ),
            case(
                "C_GetMechanismList",
                "NULL count",
                call!(t, C_GetMechanismList(s.slot, h, n!())),
                AB,
            ),
            case(
                "C_GetMechanismInfo",
                "NULL",
                call!(t, C_GetMechanismInfo(s.slot, CKM_ECDSA, n!())),
                AB,
            ),
            case(
                "C_InitToken",
                "NULL PIN",
                call!(t, C_InitToken(s.slot, n!(), 8, b)),
                AB,
            ),
            case(
                "C_InitToken",
                "NULL label",
                call!(t, C_InitToken(s.slot, pin, 6, n!())),
                AB,
            ),
            case(
                "C_InitPIN",
                "NULL PIN",
                call!(t, C_InitPIN(s.session, n!(), 6)),
                AB,
            ),
            case(
                "C_SetPIN",
                "NULL old PIN",
                call!(t, C_SetPIN(s.session, n!(), 6, pin, 6)),
                AB,
            ),
            case(
                "C_SetPIN",
                "NULL new PIN",
                call!(t, C_SetPIN(s.session, pin, 6, n!(), 6)),
                AB,
            ),
            case(
                "C_OpenSession",
                "NULL handle",
                call!(
                    t,
                    C_OpenSession(s.slot, CKF_SERIAL_SESSION, n!(), None, n!())
                ),
                AB,
            ),
            case(
                "C_CloseSession",
                "unknown handle",
                call!(t, C_CloseSession(NULL_HANDLE)),
                CKR_SESSION_HANDLE_INVALID,
            ),
            case(
                "C_CloseAllSessions",
                "unknown slot",
                call!(t, C_CloseAllSessions(0xdead)),
                CKR_SLOT_ID_INVALID,
            ),
            case(
                "C_GetSessionInfo",
                "NULL",
                call!(t, C_GetSessionInfo(s.session, n!())),
                AB,
            ),
            case(
                "C_GetOperationState",
                "NULL, NULL",
                call!(t, C_GetOperationState(s.session, n!(), n!())),
                FNS,
            ),
            case(
                "C_SetOperationState",
                "NULL state",
                call!(t, C_SetOperationState(s.session, n!(), 8, 0, 0)),
                FNS,
            ),
            case(
                "C_Login",
                "NULL PIN",
                call!(t, C_Login(s.session, CKU_USER, n!(), 6)),
                AB,
            ),
            case(
                "C_Logout",
                "unknown handle",
                call!(t, C_Logout(NULL_HANDLE)),
                CKR_SESSION_HANDLE_INVALID,
            ),
            case(
                "C_CreateObject",
                "NULL template",
                call!(t, C_CreateObject(s.session, n!(), 3, h)),
                AB,
            ),
            case(
                "C_CreateObject",
                "NULL handle out",
                call!(t, C_CreateObject(s.session, s.data_template, 3, n!())),
                AB,
            ),
            case(
                "C_CreateObject",
                "NULL value with a length",
                call!(t, C_CreateObject(s.session, s.dangling_template, 1, h)),
                AB,
            ),
            case(
                "C_CopyObject",
                "NULL template",
                call!(t, C_CopyObject(s.session, s.public, n!(), 1, h)),
                AB,
            ),
            case(
                "C_CopyObject",
                "NULL handle out",
                call!(t, C_CopyObject(s.session, s.public, n!(), 0, n!())),
                AB,
            ),
            case(
                "C_DestroyObject",
                "unknown handle",
                call!(t, C_DestroyObject(NULL_HANDLE, s.public)),
                CKR_SESSION_HANDLE_INVALID,
            ),
            case(
                "C_GetObjectSize",
                "NULL",
                call!(t, C_GetObjectSize(s.session, s.public, n!())),
                AB,
            ),
            case(
                "C_GetAttributeValue",
                "NULL template",
                call!(t, C_GetAttributeValue(s.session, s.public, n!(), 1)),
                AB,
            ),
            case(
                "C_SetAttributeValue",
                "NULL template",
                call!(t, C_SetAttributeValue(s.session, s.public, n!(), 1)),
                AB,
            ),
            case(
                "C_SetAttributeValue",
                "NULL value with a length",
                call!(
                    t,
                    C_SetAttributeValue(s.session, s.public, s.dangling_template, 1)
                ),
                AB,
            ),
            case(
                "C_FindObjectsInit",
                "NULL template",
                call!(t, C_FindObjectsInit(s.session, n!(), 2)),
                AB,
            ),
            case(
                "C_FindObjectsInit",
                "NULL value with a length",
                call!(t, C_FindObjectsInit(s.session, s.dangling_template, 1)),
                AB,
            ),
            case(
                "C_FindObjects",
                "no search",
                call!(t, C_FindObjects(s.session, h, 4, n!())),
                NOT_ACTIVE,
            ),
            case(
                "C_FindObjectsFinal",
                "unknown handle",
                call!(t, C_FindObjectsFinal(NULL_HANDLE)),
                CKR_SESSION_HANDLE_INVALID,
            ),
            case(
                "C_EncryptInit",
                "NULL mechanism",
                call!(t, C_EncryptInit(s.session, n!(), s.public)),
                AB,
            ),
            case(
                "C_Encrypt",
                "NULLs",
                call!(t, C_Encrypt(s.session, n!(), 5, n!(), n!())),
                CKR_OPERATION_NOT_INITIALIZED,
            ),
            case(
                "C_EncryptUpdate",
                "NULLs",
                call!(t, C_EncryptUpdate(s.session, n!(), 5, n!(), n!())),
                CKR_OPERATION_NOT_INITIALIZED,
            ),
            case(
                "C_EncryptFinal",
                "NULLs",
                call!(t, C_EncryptFinal(s.session, n!(), n!())),
                CKR_OPERATION_NOT_INITIALIZED,
            ),
            case(
                "C_DecryptInit",
                "NULL mechanism",
                call!(t, C_DecryptInit(s.session, n!(), s.private)),
                AB,
            ),
            case(
                "C_Decrypt",
                "NULLs",
                call!(t, C_Decrypt(s.session, n!(), 5, n!(), n!())),
                CKR_OPERATION_NOT_INITIALIZED,
            ),
            case(
                "C_DecryptUpdate",
                "NULLs",
                call!(t, C_DecryptUpdate(s.session, n!(), 5, n!(), n!())),
                CKR_OPERATION_NOT_INITIALIZED,
            ),
            case(
                "C_DecryptFinal",
                "NULLs",
                call!(t, C_DecryptFinal(s.session, n!(), n!())),
                CKR_OPERATION_NOT_INITIALIZED,
            ),
            case(
                "C_DigestInit",
                "NULL mechanism",
                call!(t, C_DigestInit(s.session, n!())),
                AB,
            ),
            case(
                "C_Digest",
                "no digest",
                call!(t, C_Digest(s.session, n!(), 5, n!(), n!())),
                NOT_ACTIVE,
            ),
            case(
                "C_DigestUpdate",
                "no digest",
                call!(t, C_DigestUpdate(s.session, n!(), 5)),
                NOT_ACTIVE,
            ),
            case(
                "C_DigestKey",
                "no digest",
                call!(t, C_DigestKey(s.session, s.public)),
                FNS,
            ),
            case(
                "C_DigestFinal",
                "no digest",
                call!(t, C_DigestFinal(s.session, n!(), n!())),
                NOT_ACTIVE,
            ),
            case(
                "C_SignInit",
                "NULL mechanism",
                call!(t, C_SignInit(s.session, n!(), s.private)),
                AB,
            ),
            case(
                "C_Sign",
                "no signature",
                call!(t, C_Sign(s.session, n!(), 5, n!(), n!())),
                NOT_ACTIVE,
            ),
            case(
                "C_SignUpdate",
                "no signature",
                call!(t, C_SignUpdate(s.session, n!(), 5)),
                NOT_ACTIVE,
            ),
            case(
                "C_SignFinal",
                "no signature",
                call!(t, C_SignFinal(s.session, n!(), n!())),
                NOT_ACTIVE,
            ),
            case(
                "C_SignRecoverInit",
                "NULL mechanism",
                call!(t, C_SignRecoverInit(s.session, n!(), s.private)),
                AB,
            ),
            case(
                "C_SignRecover",
                "NULLs",
                call!(t, C_SignRecover(s.session, n!(), 5, n!(), n!())),
                CKR_OPERATION_NOT_INITIALIZED,
            ),
            case(
                "C_VerifyInit",
                "NULL mechanism",
                call!(t, C_VerifyInit(s.session, n!(), s.public)),
                AB,
            ),
            case(
                "C_Verify",
                "no verification",
                call!(t, C_Verify(s.session, n!(), 5, n!(), 64)),
                NOT_ACTIVE,
            ),
            case(
                "C_VerifyUpdate",
                "no verification",
                call!(t, C_VerifyUpdate(s.session, n!(), 5)),
                NOT_ACTIVE,
            ),
            case(
                "C_VerifyFinal",
                "no verification",
                call!(t, C_VerifyFinal(s.session, n!(), 64)),
                NOT_ACTIVE,
            ),
            case(
                "C_VerifyRecoverInit",
                "NULL mechanism",
                call!(t, C_VerifyRecoverInit(s.session, n!(), s.public)),
                AB,
            ),
            case(
                "C_VerifyRecover",
                "NULLs",
                call!(t, C_VerifyRecover(s.session, n!(), 5, n!(), n!())),
                CKR_OPERATION_NOT_INITIALIZED,
            ),
            case(
                "C_DigestEncryptUpdate",
                "NULLs",
                call!(t, C_DigestEncryptUpdate(s.session, n!(), 5, n!(), n!())),
                FNS,
            ),
            case(
                "C_DecryptDigestUpdate",
                "NULLs",
                call!(t, C_DecryptDigestUpdate(s.session, n!(), 5, n!(), n!())),
                FNS,
            ),
            case(
                "C_SignEncryptUpdate",
                "NULLs",
                call!(t, C_SignEncryptUpdate(s.session, n!(), 5, n!(), n!())),
                FNS,
            ),
            case(
                "C_DecryptVerifyUpdate",
                "NULLs",
                call!(t, C_DecryptVerifyUpdate(s.session, n!(), 5, n!(), n!())),
                FNS,
            ),
            case(
                "C_GenerateKey",
                "NULL mechanism",
                call!(t, C_GenerateKey(s.session, n!(), n!(), 0, h)),
                AB,
            ),
            case(
                "C_GenerateKeyPair",
                "NULL mechanism",
                call!(
                    t,
                    C_GenerateKeyPair(
                        s.session,
                        n!(),
                        s.public_template,
                        3,
                        s.private_template,
                        3,
                        h,
                        h
                    )
                ),
                AB,
            ),
            case(
                "C_GenerateKeyPair",
                "NULL public template",
                call!(
                    t,
                    C_GenerateKeyPair(s.session, s.ecgen, n!(), 3, s.private_template, 3, h, h)
                ),
                AB,
            ),
            case(
                "C_GenerateKeyPair",
                "NULL private template",
                call!(
                    t,
                    C_GenerateKeyPair(s.session, s.ecgen, s.public_template, 3, n!(), 3, h, h)
                ),
                AB,
            ),
            case(
                "C_GenerateKeyPair",
                "NULL public handle out",
                call!(
                    t,
                    C_GenerateKeyPair(
                        s.session,
                        s.ecgen,
                        s.public_template,
                        3,
                        s.private_template,
                        3,
                        n!(),
                        h
                    )
                ),
                AB,
            ),
            case(
                "C_GenerateKeyPair",
                "NULL private handle out",
                call!(
                    t,
                    C_GenerateKeyPair(
                        s.session,
                        s.ecgen,
                        s.public_template,
                        3,
                        s.private_template,
                        3,
                        h,
                        n!()
                    )
                ),
                AB,
            ),
            case(
                "C_WrapKey",
                "NULL mechanism",
                call!(
                    t,
                    C_WrapKey(s.session, n!(), s.public, s.private, n!(), n!())
                ),
                AB,
            ),
            case(
                "C_UnwrapKey",
                "NULL mechanism",
                call!(
                    t,
                    C_UnwrapKey(s.session, n!(), s.private, n!(), 5, n!(), 0, n!())
                ),
                AB,
            ),
            case(
                "C_DeriveKey",
                "NULL mechanism",
                call!(t, C_DeriveKey(s.session, n!(), s.private, n!(), 0, n!())),
                AB,
            ),
            case(
                "C_SeedRandom",
                "NULL seed with a length",
                call!(t, C_SeedRandom(s.session, n!(), 8)),
                AB,
            ),
            case(
                "C_GenerateRandom",
                "NULL buffer with a length",
                call!(t, C_GenerateRandom(s.session, n!(), 8)),
                AB,
            ),
            case(
                "C_GetFunctionStatus",
                "legacy",
                call!(t, C_GetFunctionStatus(s.session)),
                CKR_FUNCTION_NOT_PARALLEL,
            ),
            case(
                "C_CancelFunction",
                "legacy",
                call!(t, C_CancelFunction(s.session)),
                CKR_FUNCTION_NOT_PARALLEL,
            ),
            case(
                "C_WaitForSlotEvent",
                "NULL slot, don't block",
                call!(t, C_WaitForSlotEvent(CKF_DONT_BLOCK, n!(), n!())),
                CKR_NO_EVENT,
            ),
        ]
    }};
}

/// The cases for the entries only the 3.0 table has.
fn v3_cases(t: &CK_FUNCTION_LIST_3_0, s: Scratch) -> Vec<Case> {
    let (b, h) = (s.bytes, s.handles);
    let pin = b"123456".as_ptr() as *mut u8;
    let sid = s.session;
    let m = s.mechanism;
    let k = s.private;
    let case = |function: &'static str, what: &'static str, rv: CK_RV, initialised: CK_RV| Case {
        function,
        what,
        rv,
        initialised,
    };
    let _ = h;
    vec![
        case(
            "C_GetInterfaceList",
            "NULL count",
            call!(t, C_GetInterfaceList(n!(), n!())),
            AB,
        ),
        case(
            "C_GetInterface",
            "NULL out",
            call!(t, C_GetInterface(n!(), n!(), n!(), 0)),
            AB,
        ),
        case(
            "C_LoginUser",
            "NULL PIN",
            call!(t, C_LoginUser(sid, CKU_USER, n!(), 6, n!(), 0)),
            AB,
        ),
        case(
            "C_LoginUser",
            "NULL user name with a length",
            call!(t, C_LoginUser(sid, CKU_USER, pin, 6, n!(), 4)),
            AB,
        ),
        case(
            "C_SessionCancel",
            "unknown handle",
            call!(t, C_SessionCancel(NULL_HANDLE, 0)),
            CKR_SESSION_HANDLE_INVALID,
        ),
        case(
            "C_MessageEncryptInit",
            "NULL mechanism",
            call!(t, C_MessageEncryptInit(sid, n!(), k)),
            FNS,
        ),
        case(
            "C_EncryptMessage",
            "NULLs",
            call!(
                t,
                C_EncryptMessage(sid, n!(), 8, n!(), 0, n!(), 5, n!(), n!())
            ),
            FNS,
        ),
        case(
            "C_EncryptMessageBegin",
            "NULLs",
            call!(t, C_EncryptMessageBegin(sid, n!(), 8, n!(), 0)),
            FNS,
        ),
        case(
            "C_EncryptMessageNext",
            "NULLs",
            call!(
                t,
                C_EncryptMessageNext(sid, n!(), 8, n!(), 5, n!(), n!(), 0)
            ),
            FNS,
        ),
        case(
            "C_MessageEncryptFinal",
            "no operation",
            call!(t, C_MessageEncryptFinal(sid)),
            FNS,
        ),
        case(
            "C_MessageDecryptInit",
            "NULL mechanism",
            call!(t, C_MessageDecryptInit(sid, n!(), k)),
            FNS,
        ),
        case(
            "C_DecryptMessage",
            "NULLs",
            call!(
                t,
                C_DecryptMessage(sid, n!(), 8, n!(), 0, n!(), 5, n!(), n!())
            ),
            FNS,
        ),
        case(
            "C_DecryptMessageBegin",
            "NULLs",
            call!(t, C_DecryptMessageBegin(sid, n!(), 8, n!(), 0)),
            FNS,
        ),
        case(
            "C_DecryptMessageNext",
            "NULLs",
            call!(
                t,
                C_DecryptMessageNext(sid, n!(), 8, n!(), 5, n!(), n!(), 0)
            ),
            FNS,
        ),
        case(
            "C_MessageDecryptFinal",
            "no operation",
            call!(t, C_MessageDecryptFinal(sid)),
            FNS,
        ),
        case(
            "C_MessageSignInit",
            "valid mechanism",
            call!(t, C_MessageSignInit(sid, m, k)),
            FNS,
        ),
        case(
            "C_SignMessage",
            "NULLs",
            call!(t, C_SignMessage(sid, n!(), 8, n!(), 5, n!(), n!())),
            FNS,
        ),
        case(
            "C_SignMessageBegin",
            "NULLs",
            call!(t, C_SignMessageBegin(sid, n!(), 8)),
            FNS,
        ),
        case(
            "C_SignMessageNext",
            "NULLs",
            call!(t, C_SignMessageNext(sid, n!(), 8, n!(), 5, n!(), n!())),
            FNS,
        ),
        case(
            "C_MessageSignFinal",
            "no operation",
            call!(t, C_MessageSignFinal(sid)),
            FNS,
        ),
        case(
            "C_MessageVerifyInit",
            "NULL mechanism",
            call!(t, C_MessageVerifyInit(sid, n!(), s.public)),
            FNS,
        ),
        case(
            "C_VerifyMessage",
            "NULLs",
            call!(t, C_VerifyMessage(sid, n!(), 8, n!(), 5, b, 64)),
            FNS,
        ),
        case(
            "C_VerifyMessageBegin",
            "NULLs",
            call!(t, C_VerifyMessageBegin(sid, n!(), 8)),
            FNS,
        ),
        case(
            "C_VerifyMessageNext",
            "NULLs",
            call!(t, C_VerifyMessageNext(sid, n!(), 8, n!(), 5, b, 64)),
            FNS,
        ),
        case(
            "C_MessageVerifyFinal",
            "no operation",
            call!(t, C_MessageVerifyFinal(sid)),
            FNS,
        ),
    ]
}

/// Every entry name of the 3.0 table (which includes the 2.40 ones).
fn entry_names(t: &CK_FUNCTION_LIST_3_0) -> Vec<String> {
    format!("{t:#?}")
        .lines()
        .filter_map(|l| l.trim_start().split(':').next())
        .filter(|name| name.starts_with("C_"))
        .map(str::to_string)
        .collect()
}

fn all_cases(tables: &Tables, s: Scratch) -> Vec<(&'static str, Case)> {
    let mut cases: Vec<(&'static str, Case)> = Vec::new();
    cases.extend(shared_cases!(tables.v2, s).into_iter().map(|c| ("2.40", c)));
    cases.extend(shared_cases!(tables.v3, s).into_iter().map(|c| ("3.0", c)));
    cases.extend(v3_cases(tables.v3, s).into_iter().map(|c| ("3.0", c)));
    cases
}

fn report(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} bad answers:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn before_initialize_every_entry_point_answers_not_initialized_and_panics_stay_inside() {
    let _serial = serial();
    let tables = tables();
    let s = Scratch::new(0, 1, 1, 2);
    let cases = all_cases(&tables, s);

    // Coverage: every entry of both tables is driven (C_Initialize below).
    let mut driven: Vec<&str> = cases.iter().map(|(_, c)| c.function).collect();
    driven.push("C_Initialize");
    for name in entry_names(tables.v3) {
        assert!(
            driven.contains(&name.as_str()),
            "{name} is not driven by any case"
        );
    }
    assert_eq!(entry_names(tables.v3).len(), 92);

    let mut failures = Vec::new();
    for (table, c) in &cases {
        let want = if UNINITIALISED_OK.contains(&c.function) {
            AB
        } else {
            CKR_CRYPTOKI_NOT_INITIALIZED
        };
        if c.rv != want {
            failures.push(format!(
                "{table} {} ({}): {:#x}, want {want:#x}",
                c.function, c.what, c.rv
            ));
        }
    }
    report(&failures);

    // A panic raised inside the module comes back as CKR_GENERAL_ERROR, the
    // host keeps running and the module stays usable.
    if cfg!(debug_assertions) {
        let mut args = CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: CKF_OS_LOCKING_OK | TEST_PANIC_FLAG,
            pReserved: ptr::null_mut(),
        };
        let p: *mut c_void = (&mut args as *mut CK_C_INITIALIZE_ARGS).cast();
        for table_init in [tables.v2.C_Initialize, tables.v3.C_Initialize] {
            let f = table_init.expect("C_Initialize");
            // SAFETY: `args` is a valid CK_C_INITIALIZE_ARGS for the call.
            assert_eq!(unsafe { f(p) }, CKR_GENERAL_ERROR, "panic in C_Initialize");
        }
        let mut info = CK_INFO::default();
        assert_eq!(
            call!(tables.v3, C_GetInfo(&mut info)),
            CKR_CRYPTOKI_NOT_INITIALIZED,
            "a panicking C_Initialize left the library initialised"
        );
    }
    let mut bad = CK_C_INITIALIZE_ARGS {
        CreateMutex: None,
        DestroyMutex: None,
        LockMutex: None,
        UnlockMutex: None,
        flags: 0,
        pReserved: s.bytes.cast(),
    };
    let p: *mut c_void = (&mut bad as *mut CK_C_INITIALIZE_ARGS).cast();
    assert_eq!(
        call!(tables.v2, C_Initialize(p)),
        AB,
        "C_Initialize, pReserved set"
    );
    assert_eq!(call!(tables.v2, C_Initialize(ptr::null_mut())), CKR_OK);
    assert_eq!(
        call!(tables.v2, C_Initialize(ptr::null_mut())),
        CKR_CRYPTOKI_ALREADY_INITIALIZED
    );
    assert_eq!(call!(tables.v2, C_Finalize(ptr::null_mut())), CKR_OK);
}

#[test]
fn after_initialize_null_and_dangling_arguments_are_refused_everywhere() {
    let _serial = serial();
    let dir = tempfile::Builder::new()
        .prefix("c-boundary-")
        .tempdir()
        .expect("temp dir");
    let socket = dir.path().join("hsmd.sock");
    // Read by the module at C_Initialize; the tests of this file take turns.
    std::env::set_var("MESIGN_HSM_SOCKET", &socket);
    let daemon = Daemon::start(
        &dir.path().join("state"),
        &socket,
        &dir.path().join("hsmd.log"),
    );
    let tables = tables();
    let pkcs11 = load_module();
    let slot = only_slot(&pkcs11);
    let session = ready_session(&pkcs11, slot, "c-boundary");
    let pair = keys::generate(&session, KeySpec::Ec(Curve::P256), "c-boundary-key");
    let public_key = keys::public_key(&session, KeySpec::Ec(Curve::P256), pair.public);
    let s = Scratch::new(
        slot.id(),
        session.handle(),
        pair.public.handle(),
        pair.private.handle(),
    );

    let mut failures = Vec::new();
    for (table, c) in all_cases(&tables, s) {
        if c.rv != c.initialised {
            failures.push(format!(
                "{table} {} ({}): {:#x}, want {:#x}",
                c.function, c.what, c.rv, c.initialised
            ));
        }
    }

    // Within operations: every step of each one, with the operation active.
    let t = tables.v3;
    let sid = s.session;
    let hash = sha256(b"c boundary");
    let hash_ptr = leak(hash.clone());
    let mut check = |what: &str, rv: CK_RV, want: CK_RV| {
        if rv != want {
            failures.push(format!("{what}: {rv:#x}, want {want:#x}"));
        }
    };
    let mut sha256_mech = CK_MECHANISM {
        mechanism: CKM_SHA256,
        pParameter: n!(),
        ulParameterLen: 0,
    };
    let mut ecdsa_sha256 = CK_MECHANISM {
        mechanism: CKM_ECDSA_SHA256,
        pParameter: n!(),
        ulParameterLen: 0,
    };
    // Bad arguments end an operation (PKCS#11 3.0 §5.10: an error other than
    // CKR_BUFFER_TOO_SMALL terminates it), so each case starts a fresh one.
    let digest_steps: [(&str, &dyn Fn() -> CK_RV); 5] = [
        ("C_Digest(NULL data, 5)", &|| {
            call!(t, C_Digest(sid, n!(), 5, s.bytes, s.len(64)))
        }),
        ("C_Digest(NULL length)", &|| {
            call!(t, C_Digest(sid, hash_ptr, 32, s.bytes, n!()))
        }),
        ("C_DigestUpdate(NULL data, 5)", &|| {
            call!(t, C_DigestUpdate(sid, n!(), 5))
        }),
        ("C_DigestFinal(NULL length)", &|| {
            call!(t, C_DigestFinal(sid, s.bytes, n!()))
        }),
        ("C_DigestFinal(NULL, NULL)", &|| {
            call!(t, C_DigestFinal(sid, n!(), n!()))
        }),
    ];
    for (what, step) in digest_steps {
        check(
            "C_DigestInit",
            call!(t, C_DigestInit(sid, &mut sha256_mech)),
            CKR_OK,
        );
        check(what, step(), AB);
        check(
            &format!("{what} ended the digest"),
            call!(t, C_DigestFinal(sid, s.bytes, s.len(64))),
            CKR_OPERATION_NOT_INITIALIZED,
        );
    }
    let sign_steps: [(&str, CK_MECHANISM_TYPE, &dyn Fn() -> CK_RV); 5] = [
        ("C_Sign(NULL data, 32)", CKM_ECDSA, &|| {
            call!(t, C_Sign(sid, n!(), 32, s.bytes, s.len(64)))
        }),
        ("C_Sign(NULL length)", CKM_ECDSA, &|| {
            call!(t, C_Sign(sid, hash_ptr, 32, s.bytes, n!()))
        }),
        ("C_SignUpdate(NULL data, 5)", CKM_ECDSA_SHA256, &|| {
            call!(t, C_SignUpdate(sid, n!(), 5))
        }),
        ("C_SignFinal(NULL length)", CKM_ECDSA_SHA256, &|| {
            call!(t, C_SignFinal(sid, s.bytes, n!()))
        }),
        ("C_SignFinal(NULL, NULL)", CKM_ECDSA_SHA256, &|| {
            call!(t, C_SignFinal(sid, n!(), n!()))
        }),
    ];
    for (what, mech, step) in sign_steps {
        let mut m = CK_MECHANISM {
            mechanism: mech,
            pParameter: n!(),
            ulParameterLen: 0,
        };
        check(
            "C_SignInit",
            call!(t, C_SignInit(sid, &mut m, s.private)),
            CKR_OK,
        );
        check(what, step(), AB);
        check(
            &format!("{what} ended the signature"),
            call!(t, C_SignFinal(sid, s.bytes, s.len(512))),
            CKR_OPERATION_NOT_INITIALIZED,
        );
    }
    let verify_steps: [(&str, CK_MECHANISM_TYPE, &dyn Fn() -> CK_RV); 4] = [
        ("C_Verify(NULL data, 32)", CKM_ECDSA, &|| {
            call!(t, C_Verify(sid, n!(), 32, s.bytes, 64))
        }),
        ("C_Verify(NULL signature, 64)", CKM_ECDSA, &|| {
            call!(t, C_Verify(sid, hash_ptr, 32, n!(), 64))
        }),
        ("C_VerifyUpdate(NULL data, 5)", CKM_ECDSA_SHA256, &|| {
            call!(t, C_VerifyUpdate(sid, n!(), 5))
        }),
        (
            "C_VerifyFinal(NULL signature, 64)",
            CKM_ECDSA_SHA256,
            &|| call!(t, C_VerifyFinal(sid, n!(), 64)),
        ),
    ];
    for (what, mech, step) in verify_steps {
        let mut m = CK_MECHANISM {
            mechanism: mech,
            pParameter: n!(),
            ulParameterLen: 0,
        };
        check(
            "C_VerifyInit",
            call!(t, C_VerifyInit(sid, &mut m, s.public)),
            CKR_OK,
        );
        check(what, step(), AB);
        check(
            &format!("{what} ended the verification"),
            call!(t, C_VerifyFinal(sid, s.bytes, 64)),
            CKR_OPERATION_NOT_INITIALIZED,
        );
    }
    // The specification leaves open whether a failed C_FindObjects ends the
    // search; ours ends it like every other operation.
    let find_steps: [(&str, &dyn Fn() -> CK_RV); 2] = [
        ("C_FindObjects(NULL handles, 4)", &|| {
            call!(t, C_FindObjects(sid, n!(), 4, s.len(0)))
        }),
        ("C_FindObjects(NULL count)", &|| {
            call!(t, C_FindObjects(sid, s.handles, 4, n!()))
        }),
    ];
    for (what, step) in find_steps {
        check(
            "C_FindObjectsInit(NULL, 0)",
            call!(t, C_FindObjectsInit(sid, n!(), 0)),
            CKR_OK,
        );
        check(what, step(), AB);
        check(
            &format!("{what} ended the search"),
            call!(t, C_FindObjectsFinal(sid)),
            CKR_OPERATION_NOT_INITIALIZED,
        );
    }

    // NULL buffers with a nonsense length: the legal length query, which
    // writes the length and keeps the operation alive.
    let mut lengths = Vec::new();
    let mut query = |what: &'static str, rv: CK_RV| {
        // SAFETY: `ulong` is leaked scratch memory.
        lengths.push((what, rv, unsafe { *s.ulong }));
    };
    query(
        "C_GetSlotList",
        call!(t, C_GetSlotList(CK_TRUE, n!(), s.len(999))),
    );
    query(
        "C_GetMechanismList",
        call!(t, C_GetMechanismList(s.slot, n!(), s.len(999))),
    );
    query(
        "C_GetInterfaceList",
        call!(t, C_GetInterfaceList(n!(), s.len(999))),
    );
    check(
        "C_DigestInit",
        call!(t, C_DigestInit(sid, &mut sha256_mech)),
        CKR_OK,
    );
    query(
        "C_Digest",
        call!(t, C_Digest(sid, hash_ptr, 32, n!(), s.len(999))),
    );
    query(
        "C_DigestFinal",
        call!(t, C_DigestFinal(sid, n!(), s.len(7))),
    );
    check(
        "C_DigestFinal after queries",
        call!(t, C_DigestFinal(sid, s.bytes, s.len(64))),
        CKR_OK,
    );
    check(
        "C_SignInit",
        call!(t, C_SignInit(sid, &mut ecdsa_sha256, s.private)),
        CKR_OK,
    );
    check(
        "C_SignUpdate",
        call!(t, C_SignUpdate(sid, hash_ptr, 32)),
        CKR_OK,
    );
    query("C_SignFinal", call!(t, C_SignFinal(sid, n!(), s.len(999))));
    check(
        "C_SignFinal after the query",
        call!(t, C_SignFinal(sid, s.bytes, s.len(4096))),
        CKR_OK,
    );
    check(
        "C_SignInit",
        call!(t, C_SignInit(sid, s.mechanism, s.private)),
        CKR_OK,
    );
    query(
        "C_Sign",
        call!(t, C_Sign(sid, hash_ptr, 32, n!(), s.len(999))),
    );
    check(
        "C_Sign after the query",
        call!(t, C_Sign(sid, hash_ptr, 32, s.bytes, s.len(4096))),
        CKR_OK,
    );
    // SAFETY: `ulong` and `bytes` are leaked scratch memory; the module
    // wrote the signature's length and bytes there.
    let signature = unsafe { std::slice::from_raw_parts(s.bytes, *s.ulong as usize) }.to_vec();
    assert_genuine("ECDSA P-256 after length queries", &hash, |h| {
        public_key.verify_ecdsa_prehash(h, &signature)
    });
    let mut template = [CK_ATTRIBUTE {
        type_: CKA_EC_POINT,
        pValue: n!(),
        ulValueLen: 999,
    }];
    check(
        "C_GetAttributeValue(NULL value, 999)",
        call!(
            t,
            C_GetAttributeValue(sid, s.public, template.as_mut_ptr(), 1)
        ),
        CKR_OK,
    );
    assert_eq!(
        template[0].ulValueLen, 67,
        "CKA_EC_POINT length of a P-256 key"
    );
    let want = [
        ("C_GetSlotList", 1),
        ("C_GetMechanismList", 0),
        ("C_GetInterfaceList", 2),
        ("C_Digest", 32),
        ("C_DigestFinal", 32),
        ("C_SignFinal", 64),
        ("C_Sign", 64),
    ];
    for ((what, rv, len), (name, expected)) in lengths.iter().zip(want) {
        assert_eq!(*what, name);
        assert_eq!(*rv, CKR_OK, "{what}: length query");
        if expected > 0 {
            assert_eq!(*len, expected, "{what}: length");
        } else {
            assert!(*len > 0 && *len < 999, "{what}: length {len}");
        }
    }

    // No refused call created anything.
    let ghosts = keys::find(&session, &[Attribute::Label(GHOST_LABEL.to_vec())]);
    assert!(
        ghosts.is_empty(),
        "a refused call created {} objects",
        ghosts.len()
    );
    report(&failures);

    drop(session);
    assert_eq!(call!(tables.v2, C_Finalize(ptr::null_mut())), CKR_OK);
    drop(daemon);
}
