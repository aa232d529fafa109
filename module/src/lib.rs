//! `libmesign_pkcs11.so`: the MeSign HSM PKCS#11 2.40 / 3.0 module.
//!
//! Signing servers load this library; it holds no key material and talks
//! to `mesign-hsmd` over a Unix socket (see [`config`] for where), one
//! request per call, using the frames of `mesign-proto`. Digesting and
//! signature verification run in the module with aws-lc-rs; signing runs
//! on the card through the daemon.
//!
//! Layout: [`ffi`] is the only code that touches raw pointers (and the only
//! place `unsafe` is allowed); [`entry`] is the wrapper every `C_*` function
//! goes through (initialisation, fork and panic checks); `functions` holds
//! the 2.40 and 3.0 function tables; the other modules each implement one
//! group of the API, adapting C arguments in `fn_c_*` functions.
//! Deliberately unsupported functions and other decisions are listed in
//! [`unsupported`].
//!
//! The module spawns no threads and has no async runtime. It assumes a
//! 64-bit `CK_ULONG` (LP64 Unix), checked at compile time.

#![deny(unsafe_code)]

pub mod config;
pub mod entry;
pub mod error;
pub mod ffi;
pub mod unsupported;

mod attributes;
mod connection;
mod decrypt;
mod derive;
mod digest;
mod encrypt;
mod failover;
mod functions;
mod general;
mod key_info;
mod library;
mod mechanism;
mod objects;
mod pipeline;
mod random;
mod rsa_crypt;
mod session;
mod sessions;
mod sign;
mod slots;
mod symmetric;
mod text;
mod tls;
mod verify;
mod wrap;

pub use error::Error;
pub use ffi::{C_GetFunctionList, C_GetInterface, C_GetInterfaceList};

// Handles and attribute integers travel as u64; the module relies on
// CK_ULONG being exactly that.
const _: () = assert!(size_of::<cryptoki_sys::CK_ULONG>() == size_of::<u64>());
