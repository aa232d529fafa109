//! After fork() the child sees an uninitialised library and may initialise
//! it again; the parent is unaffected.

use std::ptr;

use cryptoki_sys::*;
use mesign_pkcs11::C_GetFunctionList;

fn functions() -> &'static CK_FUNCTION_LIST {
    let mut list: *mut CK_FUNCTION_LIST = ptr::null_mut();
    assert_eq!(C_GetFunctionList(&mut list), CKR_OK);
    // SAFETY: C_GetFunctionList stored a pointer to the module's static table.
    unsafe { &*list }
}

fn info(f: &CK_FUNCTION_LIST) -> CK_RV {
    let mut info = CK_INFO::default();
    // SAFETY: a valid out pointer for the duration of the call.
    unsafe { f.C_GetInfo.unwrap()(&mut info) }
}

#[test]
fn child_starts_uninitialised_and_parent_is_unaffected() {
    let f = functions();
    // SAFETY: NULL arguments are allowed.
    assert_eq!(unsafe { f.C_Initialize.unwrap()(ptr::null_mut()) }, CKR_OK);
    assert_eq!(info(f), CKR_OK);

    // SAFETY: the child only makes library calls and then _exits; this test
    // binary's other threads are idle test-harness threads.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let mut code = 0;
        if info(f) != CKR_CRYPTOKI_NOT_INITIALIZED {
            code |= 1;
        }
        // SAFETY: NULL arguments are allowed.
        if unsafe { f.C_Initialize.unwrap()(ptr::null_mut()) } != CKR_OK {
            code |= 2;
        }
        if info(f) != CKR_OK {
            code |= 4;
        }
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status));
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "child saw the wrong return values (bit mask)"
    );

    assert_eq!(info(f), CKR_OK, "parent must stay initialised");
    // SAFETY: NULL reserved pointer.
    assert_eq!(unsafe { f.C_Finalize.unwrap()(ptr::null_mut()) }, CKR_OK);
}
