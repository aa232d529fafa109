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
    /// Ed25519 (RFC 8032), for CKM_EDDSA.
    #[n(2)]
    Ed25519,
    /// An AES secret key of 16, 24 or 32 bytes (not a pair: generated with
    /// [`CardRequest::GenerateSecret`]).
    #[n(3)]
    Aes {
        #[n(0)]
        bytes: u32,
    },
    /// A generic secret (HMAC) key of 1 to [`MAX_GENERIC_SECRET`] bytes.
    #[n(4)]
    GenericSecret {
        #[n(0)]
        bytes: u32,
    },
}

impl KeySpec {
    /// True for the secret (symmetric) key kinds.
    pub fn is_secret(self) -> bool {
        matches!(self, KeySpec::Aes { .. } | KeySpec::GenericSecret { .. })
    }
}

/// The longest generic secret key the card makes or imports: 64 bytes, a
/// SHA-256 block; HMAC hashes longer keys down, so they add nothing.
pub const MAX_GENERIC_SECRET: u32 = 64;

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
    /// Pure Ed25519 (RFC 8032): unlike every other scheme the input is the
    /// whole message, because pure EdDSA hashes it twice with the key.
    #[n(4)]
    Ed25519,
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
    /// The usages only a secret key has (a key pair's public half carries
    /// them, off the card). `None` for key pairs, so that their policy
    /// encodes exactly as before this field existed and old blobs open.
    #[n(8)]
    pub secret: Option<SecretUsage>,
}

/// CKA_ENCRYPT, CKA_VERIFY and CKA_WRAP of a secret key, bound into its
/// blob with the rest of its [`KeyPolicy`] (CKA_SIGN, CKA_DECRYPT,
/// CKA_UNWRAP and CKA_DERIVE are the policy's own flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Encode, Decode)]
pub struct SecretUsage {
    #[n(0)]
    pub encrypt: bool,
    #[n(1)]
    pub verify: bool,
    #[n(2)]
    pub wrap: bool,
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
    /// The 32-byte encoded Ed25519 point (RFC 8032 §5.1.5).
    #[n(2)]
    Ed25519 {
        #[n(0)]
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
    /// Generate a secret key ([`KeySpec::Aes`] or
    /// [`KeySpec::GenericSecret`]) on the card; it comes back wrapped, with
    /// its check value.
    #[n(7)]
    GenerateSecret {
        #[n(0)]
        policy: KeyPolicy,
    },
    /// Wrap a secret key value the application supplied (C_CreateObject),
    /// exactly as if the card had generated it.
    #[n(8)]
    ImportSecret {
        #[n(0)]
        policy: KeyPolicy,
        #[n(1)]
        #[cbor(with = "minicbor::bytes")]
        value: Bytes,
    },
    /// Encrypt (or decrypt) `input` with the secret key in `blob`, which
    /// must allow it.
    #[n(9)]
    Cipher {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        blob: Bytes,
        #[n(1)]
        policy: KeyPolicy,
        #[n(2)]
        cipher: Cipher,
        #[n(3)]
        encrypt: bool,
        #[n(4)]
        #[cbor(with = "minicbor::bytes")]
        input: Bytes,
    },
    /// Compute a MAC over `input` with the secret key in `blob` (which must
    /// allow signing); or, with `expected`, compare it in constant time and
    /// answer [`CardResponse::Verified`] (the key must allow verifying).
    #[n(10)]
    Mac {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        blob: Bytes,
        #[n(1)]
        policy: KeyPolicy,
        #[n(2)]
        mac: Mac,
        #[n(3)]
        #[cbor(with = "minicbor::bytes")]
        input: Bytes,
        #[n(4)]
        #[cbor(with = "minicbor::bytes")]
        expected: Option<Bytes>,
    },
    /// Create a cloning domain: a random 256-bit domain key, kept in the
    /// card's persistent state, split into one Shamir share per passphrase
    /// (any `threshold` of them rebuild it), each share sealed under its
    /// custodian's passphrase. Refused with [`CardFault::DomainExists`] if
    /// the card is in a domain already, unless `replace`.
    #[n(15)]
    DomainCreate {
        #[n(0)]
        threshold: u8,
        #[n(1)]
        passphrases: Vec<Passphrase>,
        #[n(2)]
        replace: bool,
    },
    /// Join the domain the shares belong to: each share is opened with its
    /// passphrase, the key rebuilt and checked against the domain id, and
    /// only then installed.
    #[n(16)]
    DomainJoin {
        #[n(0)]
        shares: Vec<ShareInput>,
        #[n(1)]
        replace: bool,
    },
    /// The card's domain id, if it is in a domain.
    #[n(17)]
    DomainInfo,
    /// Rewrap the key in `blob` (under the master key, with `policy`) under
    /// the domain key, binding `policy` and `binding` (a digest of every
    /// attribute of the object) as associated data. Answered with
    /// [`CardResponse::Bytes`].
    #[n(18)]
    ExportKey {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        blob: Bytes,
        #[n(1)]
        policy: KeyPolicy,
        #[n(2)]
        #[cbor(with = "minicbor::bytes")]
        binding: Bytes,
    },
    /// Open a blob made by `ExportKey` (on any card of the domain) with the
    /// same `policy` and `binding`, and rewrap it under this card's master
    /// key with the same policy but `object_id`. Answered with
    /// [`CardResponse::Bytes`].
    #[n(19)]
    ImportKey {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        domain_blob: Bytes,
        #[n(1)]
        policy: KeyPolicy,
        #[n(2)]
        #[cbor(with = "minicbor::bytes")]
        binding: Bytes,
        #[n(3)]
        object_id: u64,
    },
    /// The integrity tag of a backup file (HMAC-SHA256 under a key derived
    /// from the domain key) over `digest`, its SHA-256: answered with
    /// [`CardResponse::Bytes`]; or, with `expected`, compared in constant
    /// time and answered with [`CardResponse::Verified`].
    #[n(20)]
    BackupTag {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        digest: Bytes,
        #[n(1)]
        #[cbor(with = "minicbor::bytes")]
        expected: Option<Bytes>,
    },
    /// ECDH (CKM_ECDH1_DERIVE) with the EC private key in `blob` (which
    /// must allow deriving) and the peer's uncompressed point `peer`,
    /// which the card validates; `kdf` turns the shared secret into the
    /// value of a new secret key with policy `derived`, wrapped like a
    /// generated one. Answered with [`CardResponse::SecretKey`]: neither
    /// the shared secret nor the derived value leaves the card.
    #[n(21)]
    DeriveEcdh {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        blob: Bytes,
        #[n(1)]
        policy: KeyPolicy,
        #[n(2)]
        #[cbor(with = "minicbor::bytes")]
        peer: Bytes,
        #[n(3)]
        kdf: Kdf,
        #[n(4)]
        #[cbor(with = "minicbor::bytes")]
        shared_data: Bytes,
        #[n(5)]
        derived: KeyPolicy,
    },
    /// The tag of one replication change (HMAC-SHA256 under another key
    /// derived from the domain key than the backup tag's, so neither tag
    /// passes for the other) over `digest`, the SHA-256 of the change the
    /// daemon encodes: answered as [`CardRequest::BackupTag`] is. A box
    /// tags what it sends; the receiving box's card verifies it, so only
    /// a card of the domain can make a change other boxes accept.
    #[n(32)]
    ReplicaTag {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        digest: Bytes,
        #[n(1)]
        #[cbor(with = "minicbor::bytes")]
        expected: Option<Bytes>,
    },
    /// The public key of the domain's TLS certificate authority (an
    /// uncompressed P-256 point), answered with [`CardResponse::Bytes`].
    /// The CA key is derived from the domain key, so every card of the
    /// domain has the same one; [`CardFault::NoDomain`] without a domain.
    #[n(30)]
    DomainCaPublic,
    /// An ECDSA P-256 SHA-256 signature (DER) by the domain's TLS CA key
    /// over `tbs` (a certificate's to-be-signed bytes), answered with
    /// [`CardResponse::Bytes`].
    #[n(31)]
    DomainCaSign {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        tbs: Bytes,
    },
    /// C_WrapKey: wrap the key in `blob` (which must have been wrapped with
    /// exactly `policy` and be extractable) under `wrapping` with
    /// `algorithm`. A secret key travels as its raw value, a private key
    /// as its PKCS#8 PrivateKeyInfo. Answered with [`CardResponse::Bytes`].
    #[n(25)]
    WrapKey {
        #[n(0)]
        algorithm: WrapAlgorithm,
        #[n(1)]
        wrapping: WrappingKey,
        #[n(2)]
        #[cbor(with = "minicbor::bytes")]
        blob: Bytes,
        #[n(3)]
        policy: KeyPolicy,
    },
    /// C_UnwrapKey: unwrap `wrapped` with the card key in `blob` (which
    /// must allow unwrapping) and wrap the result under the master key
    /// with `new_policy`, whose spec names the kind of key expected; the
    /// card fills in its size (or curve) from the unwrapped key and
    /// answers with [`CardResponse::Unwrapped`].
    #[n(26)]
    UnwrapKey {
        #[n(0)]
        algorithm: WrapAlgorithm,
        #[n(1)]
        #[cbor(with = "minicbor::bytes")]
        blob: Bytes,
        #[n(2)]
        policy: KeyPolicy,
        #[n(3)]
        #[cbor(with = "minicbor::bytes")]
        wrapped: Bytes,
        #[n(4)]
        new_policy: KeyPolicy,
    },
    /// C_Encrypt with CKM_RSA_PKCS_OAEP for the hash pairs aws-lc-rs lacks
    /// (SHA-224, or an MGF1 hash other than the label hash), which the
    /// module cannot do itself: encrypt `input` to the RSA public key
    /// (`modulus`, `exponent`: big-endian, as CKA_MODULUS and
    /// CKA_PUBLIC_EXPONENT). A public operation; no blob is involved.
    /// Answered with [`CardResponse::Bytes`].
    #[n(35)]
    OaepEncrypt {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        modulus: Bytes,
        #[n(1)]
        #[cbor(with = "minicbor::bytes")]
        exponent: Bytes,
        #[n(2)]
        hash: Hash,
        #[n(3)]
        mgf_hash: Hash,
        #[n(4)]
        #[cbor(with = "minicbor::bytes")]
        label: Bytes,
        #[n(5)]
        #[cbor(with = "minicbor::bytes")]
        input: Bytes,
    },
}

/// How [`CardRequest::DeriveEcdh`] turns the shared secret Z into a key
/// value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum Kdf {
    /// CKD_NULL: Z itself, truncated from the leading end to the key's
    /// length (as PKCS#11 says for Diffie-Hellman derivations).
    #[n(0)]
    Null,
    /// The ANSI X9.63 KDF (SEC 1 §3.6.1) with this hash and the shared
    /// data as SharedInfo.
    #[n(1)]
    X963(#[n(0)] Hash),
}

/// A key-wrapping algorithm (C_WrapKey / C_UnwrapKey).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum WrapAlgorithm {
    /// AES Key Wrap, RFC 3394 (CKM_AES_KEY_WRAP, default IV): the wrapped
    /// key must be a multiple of 8 bytes, at least 16.
    #[n(0)]
    AesKw,
    /// AES Key Wrap with Padding, RFC 5649 (CKM_AES_KEY_WRAP_PAD / KWP).
    #[n(1)]
    AesKwp,
    /// RSAES-OAEP with label hash `hash`, MGF1 over `mgf_hash` and
    /// `label` (CKM_RSA_PKCS_OAEP); secret keys only.
    #[n(2)]
    RsaOaep {
        #[n(0)]
        hash: Hash,
        #[n(1)]
        #[cbor(with = "minicbor::bytes")]
        label: Bytes,
        #[n(2)]
        mgf_hash: Hash,
    },
}

/// The key a [`CardRequest::WrapKey`] wraps under.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum WrappingKey {
    /// An AES key of the card, which must allow wrapping.
    #[n(0)]
    Card {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        blob: Bytes,
        #[n(1)]
        policy: KeyPolicy,
    },
    /// An RSA public key (big-endian modulus and exponent), for OAEP.
    #[n(1)]
    RsaPublic {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        modulus: Bytes,
        #[n(1)]
        #[cbor(with = "minicbor::bytes")]
        exponent: Bytes,
    },
}

/// A passphrase as it travels to the card (wiped by the card after use).
pub type Passphrase = Bytes;

/// One custodian's share of a domain key, sealed under the custodian's
/// passphrase: PBKDF2-HMAC-SHA512 (`iterations`, `salt`) gives an
/// AES-256-GCM key; the domain id, the index, the threshold, the number of
/// shares and the iteration count are the associated data, so none of
/// them can be changed without the share ceasing to open.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct DomainShare {
    #[n(0)]
    #[cbor(with = "minicbor::bytes")]
    pub domain_id: Bytes,
    /// 1-based.
    #[n(1)]
    pub index: u8,
    #[n(2)]
    pub threshold: u8,
    #[n(3)]
    pub shares: u8,
    #[n(4)]
    pub iterations: u32,
    #[n(5)]
    #[cbor(with = "minicbor::bytes")]
    pub salt: Bytes,
    #[n(6)]
    #[cbor(with = "minicbor::bytes")]
    pub nonce: Bytes,
    /// The Shamir share (its x coordinate, then one byte per key byte)
    /// with the GCM tag appended.
    #[n(7)]
    #[cbor(with = "minicbor::bytes")]
    pub sealed: Bytes,
}

/// A share offered to [`CardRequest::DomainJoin`] with its passphrase.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ShareInput {
    #[n(0)]
    pub share: DomainShare,
    #[n(1)]
    #[cbor(with = "minicbor::bytes")]
    pub passphrase: Passphrase,
}

/// The most shares a domain key is split into.
pub const MAX_DOMAIN_SHARES: u8 = 16;
/// The shortest passphrase the card accepts for a share.
pub const MIN_PASSPHRASE_LEN: usize = 8;

/// A symmetric cipher and its parameters, for [`CardRequest::Cipher`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Cipher {
    /// AES-GCM with a 12-byte IV and a 16-byte tag appended to the
    /// ciphertext; a tag that does not verify is [`CardFault::BadInput`].
    #[n(0)]
    AesGcm {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        iv: Bytes,
        #[n(1)]
        #[cbor(with = "minicbor::bytes")]
        aad: Bytes,
    },
    /// AES-CBC with PKCS#7 padding and a 16-byte IV.
    #[n(1)]
    AesCbcPad {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        iv: Bytes,
    },
    /// AES-CTR from the 16-byte counter block `counter`, whose low
    /// `counter_bits` bits count (1..=128); a message that would wrap them
    /// is [`CardFault::BadInput`].
    #[n(2)]
    AesCtr {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        counter: Bytes,
        #[n(1)]
        counter_bits: u32,
    },
    /// AES-CBC without padding over whole blocks from the 16-byte IV `iv`:
    /// the middle parts of a multi-part CKM_AES_CBC_PAD operation, whose
    /// last part goes as [`Cipher::AesCbcPad`] (the module carries the
    /// chaining block between parts; the key stays here).
    #[n(3)]
    AesCbcBlocks {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        iv: Bytes,
    },
}

/// A MAC the card computes with a secret key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum Mac {
    /// HMAC (RFC 2104) with SHA-256, SHA-384 or SHA-512, on a generic
    /// secret key.
    #[n(0)]
    Hmac(#[n(0)] Hash),
    /// AES-CMAC (NIST SP 800-38B), 16 bytes, on an AES key.
    #[n(1)]
    AesCmac,
}

/// The most input one symmetric command takes (cipher or MAC): the card's
/// data slots are 64 KiB, and the answer (ciphertext plus tag) must fit
/// one too.
pub const MAX_SYMMETRIC_INPUT: usize = 48 * 1024;

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
    /// A new secret key: the blob, and CKA_CHECK_VALUE (the first three
    /// bytes of AES-ECB of a zero block for AES, of SHA-1 of the value for
    /// generic secrets).
    #[n(3)]
    SecretKey {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        blob: Bytes,
        #[n(1)]
        #[cbor(with = "minicbor::bytes")]
        check_value: Bytes,
    },
    /// Whether a MAC verified.
    #[n(4)]
    Verified(#[n(0)] bool),
    /// The shares of a new domain, in custodian order.
    #[n(10)]
    DomainShares(#[n(0)] Vec<DomainShare>),
    /// The card's domain id (a fingerprint of the domain key), or `None`.
    #[n(11)]
    Domain {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        id: Option<Bytes>,
    },
    /// A key made by [`CardRequest::UnwrapKey`]: its blob, the spec it was
    /// bound with (the requested kind with the size the card found), the
    /// check value of a secret key (empty for a private key) and the
    /// public key of a private key.
    #[n(25)]
    Unwrapped {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        blob: Bytes,
        #[n(1)]
        spec: KeySpec,
        #[n(2)]
        #[cbor(with = "minicbor::bytes")]
        check_value: Bytes,
        #[n(3)]
        public: Option<PublicKey>,
    },
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
    /// A domain share did not open: wrong passphrase, or the share was
    /// modified.
    #[n(20)]
    ShareRefused,
    /// The command needs a domain key and the card is in no domain.
    #[n(21)]
    NoDomain,
    /// The card is in a domain already (create or join without `replace`).
    #[n(22)]
    DomainExists,
}

/// What the card writes back into the slot.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum CardResult {
    #[n(0)]
    Ok(#[n(0)] CardResponse),
    #[n(1)]
    Err(#[n(0)] CardFault),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `KeyPolicy` as it was before secret keys: blobs made then carry
    /// this encoding as their associated data.
    #[derive(Encode)]
    struct PolicyBeforeSecretKeys {
        #[n(0)]
        object_id: u64,
        #[n(1)]
        spec: KeySpec,
        #[n(2)]
        sign: bool,
        #[n(3)]
        decrypt: bool,
        #[n(4)]
        unwrap: bool,
        #[n(5)]
        derive: bool,
        #[n(6)]
        sensitive: bool,
        #[n(7)]
        extractable: bool,
    }

    #[test]
    fn key_pair_policies_encode_as_before_secret_keys_existed() {
        let policy = KeyPolicy {
            object_id: 42,
            spec: KeySpec::Ec(Curve::P384),
            sign: true,
            decrypt: false,
            unwrap: false,
            derive: true,
            sensitive: true,
            extractable: false,
            secret: None,
        };
        let old = PolicyBeforeSecretKeys {
            object_id: 42,
            spec: KeySpec::Ec(Curve::P384),
            sign: true,
            decrypt: false,
            unwrap: false,
            derive: true,
            sensitive: true,
            extractable: false,
        };
        assert_eq!(policy.to_aad(), minicbor::to_vec(&old).unwrap());
        let with_usage = KeyPolicy {
            secret: Some(SecretUsage::default()),
            ..policy.clone()
        };
        assert_ne!(with_usage.to_aad(), policy.to_aad());
        assert_eq!(
            minicbor::decode::<KeyPolicy>(&minicbor::to_vec(&old).unwrap()).unwrap(),
            policy
        );
    }
}
