//! Certificate import: any bytes as the CKA_VALUE of an X.509 certificate
//! object.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mesign_hsmd::fuzzing::certificate(data));
