//! Who produces the signatures being counted.

/// One of the three things a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// libmesign_pkcs11.so → mesign-hsmd → card emulator.
    Ours,
    /// SoftHSMv2 from the Debian package.
    SoftHsm,
    /// aws-lc-rs called directly in this process: the ceiling for the cores.
    InProcess,
}

impl Source {
    /// Short name for progress lines and errors.
    pub fn name(self) -> &'static str {
        match self {
            Source::Ours => "ours",
            Source::SoftHsm => "softhsm",
            Source::InProcess => "aws-lc-rs",
        }
    }

    /// A distinct number per source, mixed into the digest seed so that no
    /// two runs ever sign the same hash.
    pub fn seed_tag(self) -> u64 {
        match self {
            Source::Ours => 1,
            Source::SoftHsm => 2,
            Source::InProcess => 3,
        }
    }
}
