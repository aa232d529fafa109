//! One initialised instance of the library: who we are to the daemon, the
//! connections to it, and the sessions this application opened.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use crate::config;
use crate::error::Error;
use crate::failover::Daemons;
use crate::key_info::KeyCache;
use crate::sessions::Sessions;

/// State created by C_Initialize and dropped by C_Finalize.
pub(crate) struct Library {
    /// The process that initialised us; another pid means we were forked.
    pub pid: u32,
    /// The daemon, or several replicas of one token (see `failover`).
    pub daemon: Daemons,
    pub sessions: Sessions,
    /// Metadata of token keys used at *Init (see `key_info`).
    pub keys: KeyCache,
}

impl Library {
    /// Picks a random application id and resolves the daemons; they are
    /// contacted lazily, so C_Initialize works without them.
    pub(crate) fn new() -> Result<Self, Error> {
        let mut app = [0u8; 8];
        SystemRandom::new()
            .fill(&mut app)
            .map_err(|_| Error::Transport)?;
        Ok(Library {
            pid: std::process::id(),
            daemon: Daemons::new(
                config::daemons().map_err(|_| Error::BadConfig)?,
                u64::from_ne_bytes(app),
            )?,
            sessions: Sessions::default(),
            keys: KeyCache::default(),
        })
    }
}
