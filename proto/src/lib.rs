//! The wire protocol spoken between `libmesign_pkcs11.so` and `mesign-hsmd`.
//!
//! One frame is a 4-byte big-endian body length followed by a CBOR body
//! (minicbor). Requests carry the protocol version and an id that the reply
//! echoes, so a connection can later carry pipelined requests. Every call of
//! the PKCS#11 API maps to at most one request: a signature is one round trip.
//!
//! Errors travel as PKCS#11 return values (`CK_RV`): the daemon decides the
//! exact code, the module hands it to the application unchanged.
//!
//! Attribute values travel as bytes in a host-independent form: `CK_BBOOL` is
//! one byte, `CK_ULONG` is eight bytes little-endian, arrays of `CK_ULONG`
//! are concatenations of those; everything else is passed through as is
//! (see [`attr`]).

#![forbid(unsafe_code)]

pub mod attr;
pub mod backup;
pub mod frame;
pub mod message;
pub mod quiet_read;

pub use frame::{decode_frame_body, encode_frame, read_frame, write_frame, FrameError};
pub use message::*;

/// The protocol version this crate speaks; a daemon refuses other versions.
pub const PROTOCOL_VERSION: u16 = 1;

/// The largest frame body either side accepts. Larger frames are refused
/// before any allocation, so a hostile peer cannot make the other side
/// reserve memory with a length prefix.
pub const MAX_FRAME: usize = 1 << 20;

/// The largest data chunk the module sends in one request (multi-part data is
/// hashed in the module, so only single-part raw mechanisms come near it).
pub const MAX_DATA: usize = 256 * 1024;

/// The longest message CKM_EDDSA signs: pure EdDSA cannot be pre-hashed, so
/// the message itself travels to the card and must fit one of its data
/// slots (64 KiB) with room to spare for the key blob.
pub const MAX_EDDSA_MESSAGE: usize = 32 * 1024;
