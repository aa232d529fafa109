//! `CK_ATTRIBUTE` arrays as the C boundary receives them: NULL arrays with
//! any count, NULL values with any length, values anywhere in a buffer;
//! parsed as C_CreateObject parses them and filled as C_GetAttributeValue
//! fills them (`mesign_pkcs11::ffi::fuzzing::attribute_template`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mesign_pkcs11::ffi::fuzzing::attribute_template(data));
