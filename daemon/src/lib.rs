//! mesign-hsmd: the daemon that owns all token state (PINs, lockout
//! counters, objects, sessions, logins) and is the only process talking to
//! the card.
//!
//! Layers, top down: [`daemon`] (start-up, signals, accept loop),
//! [`server`] (socket, peer credentials, frames), [`hsm`] (PKCS#11
//! semantics per request), and below it [`sessions`], [`attributes`],
//! [`mechanisms`], [`objects`], [`pin`], [`store`] and the card seam
//! [`card`] / [`cards`]. [`error`] maps every failure to one `CK_RV`.
//! [`commit`] lets concurrent writers share one durable commit.
//! [`audit`] keeps each slot's hash-chained audit log.
//! [`tls`] serves remote clients and peer boxes over mutual TLS;
//! [`replication`] keeps the token objects of the domain's boxes in step.
//! `fuzzing` (feature `fuzzing` only) holds the fuzz targets' entry points.
#![forbid(unsafe_code)]

pub mod attributes;
pub mod audit;
pub mod card;
pub mod cards;
pub mod certificate;
pub mod commit;
pub mod config;
pub mod daemon;
pub mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod hsm;
pub mod mechanisms;
pub mod objects;
pub mod pin;
pub mod replication;
pub mod server;
pub mod sessions;
pub mod store;
pub mod tls;
