//! The card firmware's command decoder and dispatcher, fed any bytes a host
//! could place in a data slot (`pci_driver_shim::fuzzing::card_command`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pci_driver_shim::fuzzing::card_command(data));
