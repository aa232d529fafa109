//! The MeSign HSM card interface.
//!
//! The daemon talks to every card the same way: it encodes a
//! [`command::CardRequest`], places it in a data slot of a shared-memory
//! command ring, posts a submission entry and rings the doorbell; the card's
//! firmware executes it, writes a completion entry and raises the completion
//! interrupt. Below that ring sit the backends: the software emulator (the
//! default; its firmware runs as the separate process `mesign-card-emu`, so
//! key material never enters the daemon) and, later, real devices.

pub mod command;
