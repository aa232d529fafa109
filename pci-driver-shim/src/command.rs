//! Commands the host (the daemon) sends to a card and the card's answers.
//!
//! They travel CBOR-encoded through the data slots of the command ring. The
//! same types serve every backend: the emulator decodes them in its firmware
//! loop, a real card's firmware would do the same.
//!
//! Private keys never appear here in clear: the card returns them as blobs
//! wrapped under its master key (AES-256-GCM) with the key's [`KeyPolicy`]
//! bound as associated data, and takes them back in that form. The card
//! enforces the policy it unwraps, so a blob whose stored attributes were
//! edited no longer opens, and a sign-only key cannot be used to decrypt.

use minicbor::{Decode, Encode};

/// Byte strings in commands.
pub type Bytes = Vec<u8>;

/// Elliptic curves the card supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub enum Curve {
    #[n(0)]
    P256,
    #[n(1)]
    P384,
    #[n(2)]
    P521,
}

impl Curve {
    /// Size of a field element / scalar in bytes (a raw signature is twice
    /// this).
    pub fn scalar_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    /// Order size in bits.
    pub fn bits(self) -> u32 {
        match self {
            Curve::P256 => 256,
            Curve::P384 => 384,
            Curve::P521 => 521,
        }
    }
}

/// What kind of key pair to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum KeySpec {
    /// RSA with e = 65537; `bits` is 2048, 3072 or 4096.
    #[n(0)]
    Rsa {
        #[n(0)]
        bits: u32,
    },
    #[n(1)]
    Ec(#[n(0)] Curve),
}

/// Hash functions the card knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub enum Hash {
    #[n(0)]
    Sha1,
    #[n(1)]
    Sha224,
    #[n(2)]
    Sha256,
    #[n(3)]
    Sha384,
    #[n(4)]
    Sha512,
}

/// How to sign. The card receives digests, never whole documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum SignScheme {
    /// PKCS#1 v1.5 over a DER DigestInfo given as input; the card checks it
    /// is a well-formed DigestInfo of a known hash.
    #[n(0)]
    RsaPkcs1DigestInfo,
    /// PKCS#1 v1.5; input is the digest.
    #[n(1)]
    RsaPkcs1(#[n(0)] Hash),
    /// RSASSA-PSS; input is the digest.
    #[n(2)]
    RsaPss {
        #[n(0)]
        hash: Hash,
        #[n(1)]
        mgf_hash: Hash,
        #[n(2)]
        salt_len: u32,
    },
    /// ECDSA over a hash of any length (truncated or zero-extended as
    /// FIPS 186 and PKCS#11 CKM_ECDSA say); answer is raw `r || s`.
    #[n(3)]
    Ecdsa,
}

/// How to decrypt (RSA only). The input is always one ciphertext block of
/// exactly the modulus length.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum DecryptScheme {
    /// RSAES-PKCS1-v1_5 with implicit rejection: a ciphertext whose padding
    /// is wrong decrypts to a synthetic message derived from the key and the
    /// ciphertext, so the answer never says whether the padding was valid.
    #[n(0)]
    RsaPkcs1,
    /// RSAES-OAEP; a ciphertext that does not decode is
    /// [`CardFault::BadInput`].
    #[n(1)]
    RsaOaep {
        #[n(0)]
        hash: Hash,
        #[n(1)]
        mgf_hash: Hash,
        #[n(2)]
        #[cbor(with = "minicbor::bytes")]
        label: Bytes,
    },
}

/// The security-relevant attributes of a key, bound to its blob as AES-GCM
/// associated data and enforced by the card on every use.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct KeyPolicy {
    /// The daemon's object id, so a blob cannot be moved to another object.
    #[n(0)]
    pub object_id: u64,
    #[n(1)]
    pub spec: KeySpec,
    #[n(2)]
    pub sign: bool,
    #[n(3)]
    pub decrypt: bool,
    #[n(4)]
    pub unwrap: bool,
    #[n(5)]
    pub derive: bool,
    #[n(6)]
    pub sensitive: bool,
    #[n(7)]
    pub extractable: bool,
}

impl KeyPolicy {
    /// The canonical encoding used as associated data.
    pub fn to_aad(&self) -> Vec<u8> {
        minicbor::to_vec(self).expect("encoding into a Vec is infallible")
    }
}

/// A public key as the card reports it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum PublicKey {
    /// Big-endian modulus and public exponent, no leading zeros.
    #[n(0)]
    Rsa {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        modulus: Bytes,
        #[n(1)]
        #[cbor(with = "minicbor::bytes")]
        exponent: Bytes,
    },
    /// Uncompressed SEC1 point (0x04 || X || Y).
    #[n(1)]
    Ec {
        #[n(0)]
        curve: Curve,
        #[n(1)]
        #[cbor(with = "minicbor::bytes")]
        point: Bytes,
    },
}

/// A command to the card.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum CardRequest {
    /// Identity and health.
    #[n(0)]
    Info,
    /// Generate a key pair on the card; the private half comes back wrapped.
    #[n(1)]
    GenerateKeyPair {
        #[n(0)]
        policy: KeyPolicy,
    },
    /// Sign `input` with the key in `blob`, which must have been wrapped with
    /// exactly `policy` and must allow signing.
    #[n(2)]
    Sign {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        blob: Bytes,
        #[n(1)]
        policy: KeyPolicy,
        #[n(2)]
        scheme: SignScheme,
        #[n(3)]
        #[cbor(with = "minicbor::bytes")]
        input: Bytes,
    },
    /// Random bytes from the card's DRBG (at most [`MAX_RANDOM`]).
    #[n(3)]
    Random {
        #[n(0)]
        len: u32,
    },
    /// Decrypt `input` with the key in `blob`, which must have been wrapped
    /// with exactly `policy` and must allow decryption.
    #[n(4)]
    Decrypt {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        blob: Bytes,
        #[n(1)]
        policy: KeyPolicy,
        #[n(2)]
        scheme: DecryptScheme,
        #[n(3)]
        #[cbor(with = "minicbor::bytes")]
        input: Bytes,
    },
}

/// The most random bytes one [`CardRequest::Random`] returns.
pub const MAX_RANDOM: u32 = 16 * 1024;

/// Card identity and health.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct CardInfo {
    /// Stable per card (the emulator keeps it in its state file).
    #[n(0)]
    pub serial: String,
    #[n(1)]
    pub model: String,
    #[n(2)]
    pub hardware_version: (u8, u8),
    #[n(3)]
    pub firmware_version: (u8, u8),
    /// False once a self-test failed: the card then refuses every command
    /// but `Info` until it restarts.
    #[n(4)]
    pub operational: bool,
    /// True for the software emulator, which is not tamper-resistant.
    #[n(5)]
    pub emulated: bool,
}

/// A card's successful answer.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum CardResponse {
    #[n(0)]
    Info(#[n(0)] CardInfo),
    #[n(1)]
    KeyPair {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        blob: Bytes,
        #[n(1)]
        public: PublicKey,
    },
    /// A signature, random bytes or a plaintext.
    #[n(2)]
    Bytes(
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        Bytes,
    ),
}

/// Why the card refused a command. The daemon maps these to CK_RV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum CardFault {
    /// The command could not be decoded.
    #[n(0)]
    Malformed,
    /// The blob does not open under the master key with this policy.
    #[n(1)]
    BadBlob,
    /// The policy does not allow this use of the key.
    #[n(2)]
    NotPermitted,
    /// The key type does not fit the scheme.
    #[n(3)]
    KeyTypeMismatch,
    /// The input has the wrong length or form (e.g. not a DigestInfo).
    #[n(4)]
    BadInput,
    /// The scheme's parameters are not supported.
    #[n(5)]
    BadParameters,
    /// A self-test failed; the card is in its error state.
    #[n(6)]
    SelfTestFailed,
    /// An internal failure (crypto library error, out of memory).
    #[n(7)]
    Internal,
}

/// What the card writes back into the slot.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum CardResult {
    #[n(0)]
    Ok(#[n(0)] CardResponse),
    #[n(1)]
    Err(#[n(0)] CardFault),
}
