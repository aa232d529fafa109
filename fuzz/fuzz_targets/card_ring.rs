//! The command ring between host and card: host submissions, honest and
//! hostile card writes anywhere in the shared region, forged completions,
//! reaping, timeouts and re-attaching (`pci_driver_shim::fuzzing::card_ring`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pci_driver_shim::fuzzing::card_ring(data));
