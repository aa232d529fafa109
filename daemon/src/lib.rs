//! MeSign HSM daemon.
