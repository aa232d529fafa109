//! The daemon's request handler behind the frame decoder: one client
//! connection's bytes, served by a fresh daemon over an in-memory card and
//! store, in whatever session state the requests lead to.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mesign_hsmd::fuzzing::requests(data));
