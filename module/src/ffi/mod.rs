//! The one place that touches raw pointers from the application.
//!
//! Every pointer and length a `C_*` function receives is turned here into a
//! checked Rust value: input slices, an output buffer implementing the
//! length-query / `CKR_BUFFER_TOO_SMALL` convention once, attribute
//! templates, mechanisms and `CK_C_INITIALIZE_ARGS`. The exported symbols
//! and the static interface descriptions live here too, because `#[no_mangle]`
//! and `Sync` on raw-pointer statics are `unsafe` in Rust's eyes.
//!
//! All functions trust the PKCS#11 calling contract: a non-NULL pointer
//! points to as many valid, properly aligned elements as its length says, and
//! stays valid for the duration of the call. That contract is what every
//! `// SAFETY:` line below relies on; NULL is always checked.

#![allow(unsafe_code)]

mod buffer;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod init_args;
mod interface;
mod mechanism;
mod template;

pub(crate) use buffer::{input, output, pin, write_out, Fill, OutBuf};
pub use init_args::TEST_PANIC_FLAG;
pub(crate) use init_args::{initialize_args, InitArgs};
pub use interface::{C_GetFunctionList, C_GetInterface, C_GetInterfaceList};
pub(crate) use mechanism::{mechanism, RawMechanism};
pub(crate) use template::{AttrAnswer, EntryValue, Template};
