//! `CK_MECHANISM` as the C boundary receives it: any type, a NULL parameter
//! with any length or a parameter of any size (PSS parameters among them);
//! parsed as C_SignInit and C_DigestInit parse it
//! (`mesign_pkcs11::ffi::fuzzing::mechanism_parameters`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mesign_pkcs11::ffi::fuzzing::mechanism_parameters(data));
