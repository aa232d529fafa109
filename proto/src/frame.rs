//! Framing: a 4-byte big-endian length, then a CBOR body of at most
//! [`MAX_FRAME`](crate::MAX_FRAME) bytes.

use std::io::{self, Read, Write};

use minicbor::{Decode, Encode};

use crate::MAX_FRAME;

/// Why a frame could not be read or decoded.
#[derive(Debug)]
pub enum FrameError {
    /// The transport failed or closed.
    Io(io::Error),
    /// The length prefix exceeds [`MAX_FRAME`](crate::MAX_FRAME).
    TooLarge(usize),
    /// The body is not a valid message.
    Malformed(minicbor::decode::Error),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "transport error: {e}"),
            FrameError::TooLarge(n) => {
                write!(f, "frame of {n} bytes exceeds the limit of {MAX_FRAME}")
            }
            FrameError::Malformed(e) => write!(f, "malformed frame: {e}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// Encodes `msg` as one frame (length prefix included) into `out`, which is
/// cleared first so callers can reuse one buffer.
pub fn encode_frame<T: Encode<()>>(msg: &T, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0; 4]);
    // Writing into a Vec cannot fail.
    minicbor::encode(msg, &mut *out).expect("encoding into a Vec is infallible");
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
}

/// Decodes a frame body (without its length prefix).
pub fn decode_frame_body<'b, T: Decode<'b, ()>>(body: &'b [u8]) -> Result<T, FrameError> {
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    minicbor::decode(body).map_err(FrameError::Malformed)
}

/// Writes `msg` as one frame, using `buf` as scratch space.
pub fn write_frame<T: Encode<()>>(
    w: &mut impl Write,
    msg: &T,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    encode_frame(msg, buf);
    w.write_all(buf)
}

/// Reads one frame body into `buf` (resized to fit) and returns its length.
/// The length prefix is checked before anything is allocated.
pub fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<usize, FrameError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    buf.resize(len, 0);
    r.read_exact(&mut buf[..len])?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::*;

    #[test]
    fn round_trip_through_a_frame() {
        let req = Request {
            version: crate::PROTOCOL_VERSION,
            id: 7,
            body: RequestBody::Sign {
                session: 3,
                key: 9,
                mechanism: cryptoki_sys::CKM_ECDSA_SHA256,
                scheme: SignScheme::Ecdsa,
                input: vec![1; 32],
            },
        };
        let mut buf = Vec::new();
        encode_frame(&req, &mut buf);
        let mut body = Vec::new();
        let n = read_frame(&mut &buf[..], &mut body).unwrap();
        assert_eq!(n, buf.len() - 4);
        let back: Request = decode_frame_body(&body).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn giant_length_prefix_is_refused_before_allocation() {
        let frame = u32::MAX.to_be_bytes();
        let mut body = Vec::new();
        match read_frame(&mut &frame[..], &mut body) {
            Err(FrameError::TooLarge(n)) => assert_eq!(n, u32::MAX as usize),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(body.capacity() < 1024);
    }

    #[test]
    fn garbage_body_is_malformed() {
        let r: Result<Request, _> = decode_frame_body(&[0xff, 0x00, 0x13]);
        assert!(matches!(r, Err(FrameError::Malformed(_))));
    }
}
