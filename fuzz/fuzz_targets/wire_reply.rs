//! The module's reply decoder: any bytes a (compromised or buggy) daemon sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesign_proto::{decode_frame_body, Reply};

fuzz_target!(|data: &[u8]| {
    let _ = decode_frame_body::<Reply>(data);
});
