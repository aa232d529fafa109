//! The daemon's frame decoder: any bytes a local client sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesign_proto::{decode_frame_body, encode_frame, read_frame, Request};

fuzz_target!(|data: &[u8]| {
    let mut body = Vec::new();
    if read_frame(&mut &data[..], &mut body).is_ok() {
        if let Ok(req) = decode_frame_body::<Request>(&body) {
            // Whatever decodes must encode and decode to the same request.
            let mut frame = Vec::new();
            encode_frame(&req, &mut frame);
            let again: Request =
                decode_frame_body(&frame[4..]).expect("re-encoded request decodes");
            assert_eq!(again, req);
        }
    }
});
