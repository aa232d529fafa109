//! Key blobs and the keys inside them: random blobs under random policies
//! must fail to open, random PKCS#8 inside a valid blob must fail to load
//! (`pci_driver_shim::fuzzing::wrapped_blob`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pci_driver_shim::fuzzing::wrapped_blob(data));
