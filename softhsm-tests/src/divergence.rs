//! Named, documented differences between SoftHSMv2 and our module.
//!
//! A case that meets a difference asks `Target::diverges`, asserts the
//! diverging behaviour exactly (so a change on either side is noticed) and
//! says so on stderr. Nothing is skipped silently.

use crate::target::Kind;

/// One known, accepted difference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Divergence {
    /// SoftHSMv2 2.6.1 (Debian) implements CKM_ECDSA but none of the
    /// CKM_ECDSA_SHA* mechanisms; C_SignInit returns CKR_MECHANISM_INVALID.
    /// Ours implements CKM_ECDSA_SHA256 because signing servers hand whole
    /// documents to the token.
    SoftHsmLacksEcdsaSha256,
    /// Only our daemon has a state directory separate from the client; for
    /// SoftHSM the "key material never stored in clear" property is out of
    /// scope (its file store encrypts with a PIN-derived key inside the
    /// client process).
    StateDirOnlyOurs,
    /// SoftHSMv2 answers C_Logout without a logged-in user with CKR_OK; the
    /// specification (and ours) says CKR_USER_NOT_LOGGED_IN.
    SoftHsmLogoutWithoutLoginIsOk,
}

impl Divergence {
    /// The target that behaves differently.
    pub fn diverging_kind(self) -> Kind {
        match self {
            Divergence::SoftHsmLacksEcdsaSha256 => Kind::SoftHsm,
            Divergence::StateDirOnlyOurs => Kind::SoftHsm,
            Divergence::SoftHsmLogoutWithoutLoginIsOk => Kind::SoftHsm,
        }
    }

    /// One line for the test log.
    pub fn note(self) -> &'static str {
        match self {
            Divergence::SoftHsmLacksEcdsaSha256 => {
                "SoftHSMv2 2.6.1 has no CKM_ECDSA_SHA256; expecting CKR_MECHANISM_INVALID"
            }
            Divergence::StateDirOnlyOurs => {
                "SoftHSM has no daemon state directory; the at-rest scan applies to ours only"
            }
            Divergence::SoftHsmLogoutWithoutLoginIsOk => {
                "SoftHSMv2 returns CKR_OK for C_Logout when nobody is logged in"
            }
        }
    }
}
