//! The MeSign HSM card interface.
//!
//! The daemon talks to every card the same way: it encodes a
//! [`command::CardRequest`], places it in a data slot of a shared-memory
//! command ring, posts a submission entry and rings the doorbell; the card's
//! firmware executes it, writes a completion entry and raises the completion
//! interrupt. Layout of the crate, top down:
//!
//! - [`card`]: [`Card`], the host side the daemon calls (slots, submission,
//!   callers reaping and validating completions for each other, timeouts,
//!   the watchdog).
//! - [`device`]: [`Device`], the one trait a backend implements (region,
//!   doorbell, interrupt).
//! - [`region`]: the shared-memory layout and its SPSC rings; with
//!   `firmware::oaep_any_hash` (aws-lc's EVP calls for RSA-OAEP hash pairs
//!   aws-lc-rs lacks), the crate's only `unsafe` code.
//! - [`emulator`]: the software emulator backend — host side
//!   ([`spawn_emulator`], [`connect_emulator`]) and, in
//!   [`emulator::server`], the card side run by the `mesign-card-emu`
//!   process, so key material never enters the daemon.
//! - [`firmware`]: what executes commands on the card: master key, key
//!   generation with pairwise tests, blob wrapping, signing, power-on
//!   self-tests, process hardening. Built on aws-lc-rs.
//! - [`command`]: the command and answer types (the fixed contract).
//! - `fuzzing` (feature `fuzzing` only): entry points for the fuzz targets.
//!
//! A real-device backend (vendor character device or VFIO) would implement
//! [`Device`] over a mapped BAR and kernel eventfds; none exists yet.

#![deny(unsafe_code)]

pub mod card;
pub mod command;
pub mod device;
pub mod emulator;
mod error;
mod eventfd;
pub mod firmware;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
#[allow(unsafe_code)]
pub mod region;

pub use card::{Card, SubmittedBatch};
pub use device::Device;
pub use emulator::{
    connect_emulator, emulator_exe, spawn_emulator, spawn_emulator_on, EmulatorProcess,
};
pub use error::CardError;
pub use region::{RegionError, SharedRegion};
