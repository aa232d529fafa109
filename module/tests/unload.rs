//! A host may dlclose the module and keep running threads that used it
//! (p11-kit and Java do). The module's dependencies register thread-exit
//! destructors (aws-lc's per-thread state), so the library must stay mapped
//! after dlclose (`-z nodelete`, see build.rs) or those threads crash when
//! they exit.

use std::ffi::CString;
use std::path::PathBuf;

use cryptoki_sys::{CKR_OK, CK_FUNCTION_LIST_PTR, CK_RV};

fn cdylib() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .join("libmesign_pkcs11.so")
}

/// Loads the module, initialises and finalises it, and unloads it, all on
/// the calling thread.
fn load_use_unload() {
    let path = CString::new(cdylib().into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: dlopen with a NUL-terminated path; the handle is checked.
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!handle.is_null(), "dlopen failed");
    let name = CString::new("C_GetFunctionList").unwrap();
    // SAFETY: looking up a symbol in a live handle.
    let sym = unsafe { libc::dlsym(handle, name.as_ptr()) };
    assert!(!sym.is_null());
    type GetFunctionList = unsafe extern "C" fn(*mut CK_FUNCTION_LIST_PTR) -> CK_RV;
    // SAFETY: the symbol is the module's C_GetFunctionList with this signature.
    let get_list: GetFunctionList = unsafe { std::mem::transmute(sym) };
    let mut list: CK_FUNCTION_LIST_PTR = std::ptr::null_mut();
    // SAFETY: valid out-pointer; the returned table is static in the module.
    unsafe {
        assert_eq!(get_list(&mut list), CKR_OK);
        let list = &*list;
        // C_Initialize draws the application id from the crypto library's
        // RNG, which sets up that library's per-thread state.
        assert_eq!(list.C_Initialize.unwrap()(std::ptr::null_mut()), CKR_OK);
        assert_eq!(list.C_Finalize.unwrap()(std::ptr::null_mut()), CKR_OK);
        assert_eq!(libc::dlclose(handle), 0);
    }
}

#[test]
fn threads_that_used_an_unloaded_module_exit_cleanly() {
    assert!(
        cdylib().exists(),
        "run `cargo build -p mesign-pkcs11` first"
    );
    // If the module's code were unmapped, this thread's exit would run a
    // destructor in unmapped memory and the whole test process would die.
    std::thread::spawn(load_use_unload).join().unwrap();
    std::thread::spawn(load_use_unload).join().unwrap();
}
