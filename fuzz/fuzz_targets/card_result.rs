//! The host's decoder for what a card writes back into a slot
//! (`pci_driver_shim::fuzzing::card_result`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pci_driver_shim::fuzzing::card_result(data));
