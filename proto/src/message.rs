//! Requests and replies. Each [`RequestBody`] variant names the PKCS#11 call
//! it serves; the matching [`ReplyBody`] variant carries its result.
//!
//! Handles (slots, sessions, objects) are the values the application sees.
//! The daemon never reuses an object or session handle while it runs.

use minicbor::{Decode, Encode};

/// A byte string, encoded as a CBOR byte string rather than an array.
pub type Bytes = Vec<u8>;

/// One request frame.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Request {
    /// Must equal [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).
    #[n(0)]
    pub version: u16,
    /// Echoed in the reply.
    #[n(1)]
    pub id: u64,
    #[n(2)]
    pub body: RequestBody,
}

/// One reply frame.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Reply {
    /// The id of the request this answers.
    #[n(0)]
    pub id: u64,
    #[n(1)]
    pub result: ReplyResult,
}

/// Success with a body, or a PKCS#11 return value.
// A reply is built and decoded once per call; boxing the larger bodies would
// cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum ReplyResult {
    #[n(0)]
    Ok(#[n(0)] ReplyBody),
    /// A `CK_RV` other than `CKR_OK`.
    #[n(1)]
    Err(#[n(0)] u64),
}

/// An attribute as it travels: type and value in the wire form of
/// [`crate::attr`]. `value` is `None` only in queries.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Attribute {
    #[n(0)]
    pub ty: u64,
    #[n(1)]
    #[cbor(with = "minicbor::bytes")]
    pub value: Bytes,
}

/// The daemon's answer for one attribute of a `C_GetAttributeValue` query.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum AttributeValue {
    /// The value in wire form.
    #[n(0)]
    Value(
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        Bytes,
    ),
    /// The attribute exists but may not be revealed (CKR_ATTRIBUTE_SENSITIVE).
    #[n(1)]
    Sensitive,
    /// The object has no such attribute (CKR_ATTRIBUTE_TYPE_INVALID).
    #[n(2)]
    Invalid,
}

/// How the card is to sign. The module hashes multi-part data itself and for
/// the hash-and-sign mechanisms sends only the digest, so that the card signs
/// digests and a signature costs one small request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum SignScheme {
    /// PKCS#1 v1.5; `input` is a DER DigestInfo (CKM_RSA_PKCS).
    #[n(0)]
    RsaPkcs1DigestInfo,
    /// PKCS#1 v1.5; `input` is the digest computed with `hash`.
    #[n(1)]
    RsaPkcs1(#[n(0)] HashAlg),
    /// RSASSA-PSS; `input` is the digest computed with `hash`.
    #[n(2)]
    RsaPss {
        #[n(0)]
        hash: HashAlg,
        #[n(1)]
        mgf_hash: HashAlg,
        #[n(2)]
        salt_len: u32,
    },
    /// ECDSA; `input` is a hash of any length (CKM_ECDSA rules); the
    /// signature is raw `r || s`.
    #[n(3)]
    Ecdsa,
    /// Pure Ed25519 (CKM_EDDSA without prehash or context); `input` is the
    /// whole message, at most [`crate::MAX_EDDSA_MESSAGE`] bytes.
    #[n(4)]
    Ed25519,
}

/// How the card is to decrypt (C_Decrypt with an RSA private key). The
/// module has checked the mechanism parameter; the daemon checks again.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum DecryptScheme {
    /// CKM_RSA_PKCS (RSAES-PKCS1-v1_5).
    #[n(0)]
    RsaPkcs1,
    /// CKM_RSA_PKCS_OAEP with MGF1 over `mgf_hash` and the label given as
    /// CKZ_DATA_SPECIFIED source data (empty for none).
    #[n(1)]
    RsaOaep {
        #[n(0)]
        hash: HashAlg,
        #[n(1)]
        mgf_hash: HashAlg,
        #[n(2)]
        #[cbor(with = "minicbor::bytes")]
        label: Bytes,
    },
}

/// A symmetric cipher's parameters as the application gave them (C_EncryptInit
/// / C_DecryptInit with an AES key); the daemon checks them again.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum CipherParams {
    /// CKM_AES_GCM: the IV, the additional authenticated data and the tag
    /// length in bits.
    #[n(0)]
    AesGcm {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        iv: Bytes,
        #[n(1)]
        #[cbor(with = "minicbor::bytes")]
        aad: Bytes,
        #[n(2)]
        tag_bits: u64,
    },
    /// CKM_AES_CBC_PAD: the IV.
    #[n(1)]
    AesCbcPad {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        iv: Bytes,
    },
    /// CKM_AES_CTR: the counter block and how many of its low bits count.
    #[n(2)]
    AesCtr {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        counter: Bytes,
        #[n(1)]
        counter_bits: u64,
    },
    /// The middle parts of a multi-part CKM_AES_CBC_PAD operation: whole
    /// blocks, no padding, chained from `iv` (the previous part's last
    /// ciphertext block); the last part goes as `AesCbcPad`.
    #[n(3)]
    AesCbcBlocks {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        iv: Bytes,
    },
}

/// Hash functions named on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub enum HashAlg {
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

impl HashAlg {
    /// Digest length in bytes.
    #[allow(clippy::len_without_is_empty)] // a digest is never empty
    pub fn len(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha224 => 28,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }
}

/// Requests from the module to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum RequestBody {
    /// First frame on every connection. `app` is a random number the module
    /// picks at C_Initialize; together with the peer's process id it names
    /// the application whose sessions and login the connection acts for.
    #[n(0)]
    Hello {
        #[n(0)]
        app: u64,
    },
    /// C_GetSlotList / C_GetSlotInfo.
    #[n(1)]
    Slots,
    /// C_GetTokenInfo.
    #[n(2)]
    TokenInfo {
        #[n(0)]
        slot: u64,
    },
    /// C_GetMechanismList and C_GetMechanismInfo in one go.
    #[n(3)]
    Mechanisms {
        #[n(0)]
        slot: u64,
    },
    /// C_InitToken.
    #[n(4)]
    InitToken {
        #[n(0)]
        slot: u64,
        #[n(1)]
        #[cbor(with = "minicbor::bytes")]
        so_pin: Bytes,
        /// 32 bytes, blank padded, as the application gave it.
        #[n(2)]
        #[cbor(with = "minicbor::bytes")]
        label: Bytes,
    },
    /// C_InitPIN (SO session).
    #[n(5)]
    InitPin {
        #[n(0)]
        session: u64,
        #[n(1)]
        #[cbor(with = "minicbor::bytes")]
        pin: Bytes,
    },
    /// C_SetPIN.
    #[n(6)]
    SetPin {
        #[n(0)]
        session: u64,
        #[n(1)]
        #[cbor(with = "minicbor::bytes")]
        old_pin: Bytes,
        #[n(2)]
        #[cbor(with = "minicbor::bytes")]
        new_pin: Bytes,
    },
    /// C_OpenSession. `flags` are the CKF_* session flags.
    #[n(7)]
    OpenSession {
        #[n(0)]
        slot: u64,
        #[n(1)]
        flags: u64,
    },
    /// C_CloseSession.
    #[n(8)]
    CloseSession {
        #[n(0)]
        session: u64,
    },
    /// C_CloseAllSessions.
    #[n(9)]
    CloseAllSessions {
        #[n(0)]
        slot: u64,
    },
    /// C_GetSessionInfo.
    #[n(10)]
    SessionInfo {
        #[n(0)]
        session: u64,
    },
    /// C_Login. `user_type` is CKU_SO, CKU_USER or CKU_CONTEXT_SPECIFIC.
    #[n(11)]
    Login {
        #[n(0)]
        session: u64,
        #[n(1)]
        user_type: u64,
        #[n(2)]
        #[cbor(with = "minicbor::bytes")]
        pin: Bytes,
    },
    /// C_Logout.
    #[n(12)]
    Logout {
        #[n(0)]
        session: u64,
    },
    /// C_CreateObject.
    #[n(13)]
    CreateObject {
        #[n(0)]
        session: u64,
        #[n(1)]
        template: Vec<Attribute>,
    },
    /// C_CopyObject.
    #[n(14)]
    CopyObject {
        #[n(0)]
        session: u64,
        #[n(1)]
        object: u64,
        #[n(2)]
        template: Vec<Attribute>,
    },
    /// C_DestroyObject.
    #[n(15)]
    DestroyObject {
        #[n(0)]
        session: u64,
        #[n(1)]
        object: u64,
    },
    /// C_GetObjectSize.
    #[n(16)]
    ObjectSize {
        #[n(0)]
        session: u64,
        #[n(1)]
        object: u64,
    },
    /// C_GetAttributeValue: one answer per requested type, in order.
    #[n(17)]
    GetAttributes {
        #[n(0)]
        session: u64,
        #[n(1)]
        object: u64,
        #[n(2)]
        types: Vec<u64>,
    },
    /// C_SetAttributeValue.
    #[n(18)]
    SetAttributes {
        #[n(0)]
        session: u64,
        #[n(1)]
        object: u64,
        #[n(2)]
        template: Vec<Attribute>,
    },
    /// C_FindObjectsInit: the daemon answers with every matching handle the
    /// session may see; the module pages through them in C_FindObjects.
    #[n(19)]
    FindObjects {
        #[n(0)]
        session: u64,
        #[n(1)]
        template: Vec<Attribute>,
    },
    /// C_GenerateKeyPair.
    #[n(20)]
    GenerateKeyPair {
        #[n(0)]
        session: u64,
        #[n(1)]
        mechanism: u64,
        #[n(2)]
        public_template: Vec<Attribute>,
        #[n(3)]
        private_template: Vec<Attribute>,
    },
    /// C_Sign / C_SignFinal: one round trip per signature. The daemon checks
    /// the session, the login state, the key's CKA_SIGN and
    /// CKA_ALLOWED_MECHANISMS against `mechanism`, and that `scheme` fits it.
    #[n(21)]
    Sign {
        #[n(0)]
        session: u64,
        #[n(1)]
        key: u64,
        #[n(2)]
        mechanism: u64,
        #[n(3)]
        scheme: SignScheme,
        #[n(4)]
        #[cbor(with = "minicbor::bytes")]
        input: Bytes,
    },
    /// C_GenerateRandom.
    #[n(22)]
    GenerateRandom {
        #[n(0)]
        session: u64,
        #[n(1)]
        len: u32,
    },
    /// Asks only whether the session handle is valid for this application
    /// (for calls the module otherwise answers alone, such as C_SeedRandom).
    #[n(23)]
    CheckSession {
        #[n(0)]
        session: u64,
    },
    /// Daemon and card status for the admin CLI.
    #[n(24)]
    Status,
    /// Up to `max` records of the slot's audit log from record number
    /// `from`, as stored (the daemon may return fewer to fit a frame; none
    /// past the end). Any peer allowed on the socket may read the log: it
    /// holds no secrets, and the socket is already access-controlled.
    #[n(25)]
    AuditRead {
        #[n(0)]
        slot: u64,
        #[n(1)]
        from: u64,
        #[n(2)]
        max: u32,
    },
    /// The signing operation a C_Login(CKU_CONTEXT_SPECIFIC) authorised
    /// ended without its signature (C_SessionCancel, an error, C_Logout):
    /// the daemon drops the session's unused context-specific login, so it
    /// cannot authorise a later operation. Answered with `Done`, also when
    /// there was none.
    #[n(26)]
    DropContextLogin {
        #[n(0)]
        session: u64,
    },
    /// C_Decrypt: one round trip per ciphertext. The daemon checks the
    /// session, the login state, the key's CKA_DECRYPT and
    /// CKA_ALLOWED_MECHANISMS against `mechanism`, that `scheme` fits it,
    /// and the ciphertext length; the card decrypts. Answered with
    /// [`ReplyBody::Bytes`].
    #[n(30)]
    Decrypt {
        #[n(0)]
        session: u64,
        #[n(1)]
        key: u64,
        #[n(2)]
        mechanism: u64,
        #[n(3)]
        scheme: DecryptScheme,
        #[n(4)]
        #[cbor(with = "minicbor::bytes")]
        input: Bytes,
    },
    /// C_GenerateKey (CKM_AES_KEY_GEN, CKM_GENERIC_SECRET_KEY_GEN): the
    /// card makes the key. Answered with [`ReplyBody::Object`].
    #[n(45)]
    GenerateKey {
        #[n(0)]
        session: u64,
        #[n(1)]
        mechanism: u64,
        #[n(2)]
        template: Vec<Attribute>,
    },
    /// C_Encrypt with a secret (AES) key: the card encrypts. Answered with
    /// [`ReplyBody::Bytes`].
    #[n(46)]
    SecretEncrypt {
        #[n(0)]
        session: u64,
        #[n(1)]
        key: u64,
        #[n(2)]
        mechanism: u64,
        #[n(3)]
        params: CipherParams,
        #[n(4)]
        #[cbor(with = "minicbor::bytes")]
        input: Bytes,
    },
    /// C_Decrypt with a secret (AES) key: the card decrypts. Answered with
    /// [`ReplyBody::Bytes`].
    #[n(47)]
    SecretDecrypt {
        #[n(0)]
        session: u64,
        #[n(1)]
        key: u64,
        #[n(2)]
        mechanism: u64,
        #[n(3)]
        params: CipherParams,
        #[n(4)]
        #[cbor(with = "minicbor::bytes")]
        input: Bytes,
    },
    /// C_Sign / C_SignFinal with a MAC mechanism (HMAC, CMAC): the card
    /// computes the MAC over the whole data. Answered with
    /// [`ReplyBody::Bytes`].
    #[n(48)]
    MacSign {
        #[n(0)]
        session: u64,
        #[n(1)]
        key: u64,
        #[n(2)]
        mechanism: u64,
        #[n(3)]
        #[cbor(with = "minicbor::bytes")]
        input: Bytes,
    },
    /// C_Verify / C_VerifyFinal with a MAC mechanism: the card compares in
    /// constant time (the key is secret, so the module cannot). Answered
    /// with `Done`, or CKR_SIGNATURE_INVALID / CKR_SIGNATURE_LEN_RANGE.
    #[n(49)]
    MacVerify {
        #[n(0)]
        session: u64,
        #[n(1)]
        key: u64,
        #[n(2)]
        mechanism: u64,
        #[n(3)]
        #[cbor(with = "minicbor::bytes")]
        input: Bytes,
        #[n(4)]
        #[cbor(with = "minicbor::bytes")]
        mac: Bytes,
    },
    /// `mesign-hsm domain create` (SO session): the card makes a cloning
    /// domain key and splits it into one share per passphrase, any
    /// `threshold` of which rebuild it. Answered with
    /// [`ReplyBody::DomainShares`]; the passphrases are wiped after use.
    #[n(60)]
    DomainCreate {
        #[n(0)]
        session: u64,
        #[n(1)]
        threshold: u8,
        #[n(2)]
        passphrases: Vec<Passphrase>,
        /// Replace the domain the card is in (its backups become unreadable
        /// to it).
        #[n(3)]
        replace: bool,
    },
    /// `mesign-hsm domain join` (SO session): the card opens the shares,
    /// rebuilds the domain key and installs it. Answered with
    /// [`ReplyBody::Domain`].
    #[n(61)]
    DomainJoin {
        #[n(0)]
        session: u64,
        #[n(1)]
        shares: Vec<DomainShareInput>,
        #[n(2)]
        replace: bool,
    },
    /// The slot's domain id (public; no login). Answered with
    /// [`ReplyBody::Domain`].
    #[n(62)]
    DomainShow {
        #[n(0)]
        slot: u64,
    },
    /// `mesign-hsm backup export` (user session): every token object in
    /// one tagged file ([`crate::backup`]). Answered with
    /// [`ReplyBody::Bytes`].
    #[n(63)]
    BackupExport {
        #[n(0)]
        session: u64,
    },
    /// `mesign-hsm backup import` (user session, R/W). Answered with
    /// [`ReplyBody::BackupImported`].
    #[n(64)]
    BackupImport {
        #[n(0)]
        session: u64,
        #[n(1)]
        #[cbor(with = "minicbor::bytes")]
        file: Bytes,
    },
    /// C_DeriveKey with CKM_ECDH1_DERIVE: the card agrees a secret with
    /// the EC private key `base` and derives a new secret key from
    /// `template`. Answered with [`ReplyBody::Object`].
    #[n(70)]
    DeriveKey {
        #[n(0)]
        session: u64,
        #[n(1)]
        mechanism: u64,
        #[n(2)]
        base: u64,
        #[n(3)]
        params: EcdhParams,
        #[n(4)]
        template: Vec<Attribute>,
    },
    /// The public key of the domain's TLS certificate authority, which
    /// the slot's card derives from the domain key (public; no login).
    /// Answered with [`ReplyBody::Bytes`] (an uncompressed P-256 point).
    #[n(80)]
    DomainCaPublic {
        #[n(0)]
        slot: u64,
    },
    /// `mesign-hsm domain tls-cert` (SO session): the card signs a TLS
    /// certificate's to-be-signed bytes with the domain CA key. Answered
    /// with [`ReplyBody::Bytes`] (a DER ECDSA signature).
    #[n(81)]
    DomainCaSign {
        #[n(0)]
        session: u64,
        #[n(1)]
        #[cbor(with = "minicbor::bytes")]
        tbs: Bytes,
    },
    /// Replication, from a box of the domain only (mutual TLS with a box
    /// certificate): the version of every token object the slot knows,
    /// deleted ones included. Answered with [`ReplyBody::ReplicaVersions`].
    #[n(82)]
    ReplicaVersions {
        #[n(0)]
        slot: u64,
    },
    /// Replication, from a box of the domain only: apply one change of a
    /// token object. Answered with [`ReplyBody::ReplicaApplied`].
    #[n(83)]
    ReplicaApply {
        #[n(0)]
        slot: u64,
        #[n(1)]
        change: Box<ReplicaChange>,
    },
    /// C_WrapKey: the card wraps the key `key` under `wrapping` (an AES
    /// secret key, or an RSA public key for OAEP). The daemon checks
    /// CKA_WRAP, CKA_EXTRACTABLE, CKA_WRAP_WITH_TRUSTED / CKA_TRUSTED and
    /// CKA_WRAP_TEMPLATE first. Answered with [`ReplyBody::Bytes`].
    #[n(75)]
    WrapKey {
        #[n(0)]
        session: u64,
        #[n(1)]
        mechanism: WrapMechanism,
        #[n(2)]
        wrapping: u64,
        #[n(3)]
        key: u64,
    },
    /// C_UnwrapKey: the card unwraps `wrapped` with `unwrapping` into a new
    /// key described by `template` (merged with the unwrapping key's
    /// CKA_UNWRAP_TEMPLATE). Answered with [`ReplyBody::Object`].
    #[n(76)]
    UnwrapKey {
        #[n(0)]
        session: u64,
        #[n(1)]
        mechanism: WrapMechanism,
        #[n(2)]
        unwrapping: u64,
        #[n(3)]
        #[cbor(with = "minicbor::bytes")]
        wrapped: Bytes,
        #[n(4)]
        template: Vec<Attribute>,
    },
    /// C_Encrypt with CKM_RSA_PKCS_OAEP for the hash pairs the module
    /// cannot do itself (SHA-224, or an MGF1 hash other than the label
    /// hash): the card encrypts `input` to the RSA public key `key`. The
    /// daemon checks the key's visibility (a public object needs no login),
    /// CKA_ENCRYPT and CKA_ALLOWED_MECHANISMS. `scheme` is always
    /// [`DecryptScheme::RsaOaep`]. Answered with [`ReplyBody::Bytes`].
    #[n(93)]
    OaepEncrypt {
        #[n(0)]
        session: u64,
        #[n(1)]
        key: u64,
        #[n(2)]
        scheme: DecryptScheme,
        #[n(3)]
        #[cbor(with = "minicbor::bytes")]
        input: Bytes,
    },
}

/// `CK_ECDH1_DERIVE_PARAMS` as it travels: the KDF (CKD_*), the shared
/// data and the peer's public point as the application gave it (raw or
/// DER OCTET STRING; the daemon and the card check it).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct EcdhParams {
    #[n(0)]
    pub kdf: u64,
    #[n(1)]
    #[cbor(with = "minicbor::bytes")]
    pub shared_data: Bytes,
    #[n(2)]
    #[cbor(with = "minicbor::bytes")]
    pub public_data: Bytes,
}

/// A key-wrapping mechanism with its parameters, as C_WrapKey and
/// C_UnwrapKey pass it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum WrapMechanism {
    /// CKM_AES_KEY_WRAP (RFC 3394, default IV).
    #[n(0)]
    AesKeyWrap,
    /// CKM_AES_KEY_WRAP_PAD / CKM_AES_KEY_WRAP_KWP (RFC 5649).
    #[n(1)]
    AesKeyWrapPad,
    /// CKM_RSA_PKCS_OAEP with label hash `hash`, MGF1 over `mgf_hash` and
    /// the label `label`.
    #[n(2)]
    RsaOaep {
        #[n(0)]
        hash: HashAlg,
        #[n(1)]
        #[cbor(with = "minicbor::bytes")]
        label: Bytes,
        #[n(2)]
        mgf_hash: HashAlg,
    },
}

/// One audit record as stored, encoded as a CBOR byte string.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(transparent)]
pub struct AuditRecordBytes(
    #[n(0)]
    #[cbor(with = "minicbor::bytes")]
    pub Bytes,
);

/// Slot description for C_GetSlotInfo; one per card.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SlotInfo {
    #[n(0)]
    pub slot: u64,
    /// Up to 64 characters; the module blank-pads.
    #[n(1)]
    pub description: String,
    #[n(2)]
    pub manufacturer: String,
    /// CKF_TOKEN_PRESENT, CKF_HW_SLOT, ...
    #[n(3)]
    pub flags: u64,
    #[n(4)]
    pub hardware_version: (u8, u8),
    #[n(5)]
    pub firmware_version: (u8, u8),
}

/// Token description for C_GetTokenInfo.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct TokenInfo {
    /// 32 bytes, blank padded.
    #[n(0)]
    #[cbor(with = "minicbor::bytes")]
    pub label: Bytes,
    #[n(1)]
    pub manufacturer: String,
    #[n(2)]
    pub model: String,
    #[n(3)]
    pub serial: String,
    /// CKF_* token flags, including the PIN state flags.
    #[n(4)]
    pub flags: u64,
    #[n(5)]
    pub max_session_count: u64,
    #[n(6)]
    pub session_count: u64,
    #[n(7)]
    pub max_rw_session_count: u64,
    #[n(8)]
    pub rw_session_count: u64,
    #[n(9)]
    pub max_pin_len: u64,
    #[n(10)]
    pub min_pin_len: u64,
    #[n(11)]
    pub total_public_memory: u64,
    #[n(12)]
    pub free_public_memory: u64,
    #[n(13)]
    pub total_private_memory: u64,
    #[n(14)]
    pub free_private_memory: u64,
    #[n(15)]
    pub hardware_version: (u8, u8),
    #[n(16)]
    pub firmware_version: (u8, u8),
    /// "YYYYMMDDhhmmss00" (CKF_CLOCK_ON_TOKEN), or empty.
    #[n(17)]
    pub utc_time: String,
}

/// C_GetMechanismInfo for one mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct MechanismInfo {
    #[n(0)]
    pub mechanism: u64,
    #[n(1)]
    pub min_key_size: u64,
    #[n(2)]
    pub max_key_size: u64,
    #[n(3)]
    pub flags: u64,
}

/// C_GetSessionInfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct SessionInfo {
    #[n(0)]
    pub slot: u64,
    /// CKS_* state.
    #[n(1)]
    pub state: u64,
    /// CKF_RW_SESSION | CKF_SERIAL_SESSION.
    #[n(2)]
    pub flags: u64,
    #[n(3)]
    pub device_error: u64,
}

/// Daemon status for operators.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Status {
    #[n(0)]
    pub daemon_version: String,
    #[n(1)]
    pub cards: Vec<CardStatus>,
}

/// One card as the daemon sees it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct CardStatus {
    #[n(0)]
    pub slot: u64,
    /// "emulator" or the device path.
    #[n(1)]
    pub backend: String,
    #[n(2)]
    pub serial: String,
    #[n(3)]
    pub firmware_version: (u8, u8),
    /// False when the card's self-tests failed and it refuses service.
    #[n(4)]
    pub operational: bool,
    #[n(5)]
    pub token_initialized: bool,
    #[n(6)]
    pub objects: u64,
}

/// A custodian's passphrase on its way to the card.
pub type Passphrase = Bytes;

/// One custodian's share of a domain key as the card sealed it under the
/// custodian's passphrase (PBKDF2-HMAC-SHA512 with `salt` and
/// `iterations`, then AES-256-GCM with every other field as associated
/// data).
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
    #[n(7)]
    #[cbor(with = "minicbor::bytes")]
    pub sealed: Bytes,
}

/// A share offered to DomainJoin with its custodian's passphrase.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct DomainShareInput {
    #[n(0)]
    pub share: DomainShare,
    #[n(1)]
    #[cbor(with = "minicbor::bytes")]
    pub passphrase: Passphrase,
}

/// An object a backup import left alone.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SkippedObject {
    /// CKA_CLASS.
    #[n(0)]
    pub class: u64,
    #[n(1)]
    #[cbor(with = "minicbor::bytes")]
    pub id: Bytes,
    #[n(2)]
    #[cbor(with = "minicbor::bytes")]
    pub label: Bytes,
}

/// Successful replies, one variant per kind of answer.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum ReplyBody {
    /// Hello, InitToken, InitPin, SetPin, CloseSession, CloseAllSessions,
    /// Login, Logout, DestroyObject, SetAttributes, CheckSession.
    #[n(0)]
    Done,
    #[n(1)]
    Hello {
        #[n(0)]
        daemon_version: String,
    },
    #[n(2)]
    Slots(#[n(0)] Vec<SlotInfo>),
    #[n(3)]
    TokenInfo(#[n(0)] TokenInfo),
    #[n(4)]
    Mechanisms(#[n(0)] Vec<MechanismInfo>),
    /// OpenSession.
    #[n(5)]
    Session(#[n(0)] u64),
    #[n(6)]
    SessionInfo(#[n(0)] SessionInfo),
    /// CreateObject, CopyObject.
    #[n(7)]
    Object(#[n(0)] u64),
    #[n(8)]
    ObjectSize(#[n(0)] u64),
    /// GetAttributes, in the order asked.
    #[n(9)]
    Attributes(#[n(0)] Vec<AttributeValue>),
    /// FindObjects.
    #[n(10)]
    Objects(#[n(0)] Vec<u64>),
    #[n(11)]
    KeyPair {
        #[n(0)]
        public: u64,
        #[n(1)]
        private: u64,
    },
    /// Sign, GenerateRandom, Decrypt.
    #[n(12)]
    Bytes(
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        Bytes,
    ),
    #[n(13)]
    Status(#[n(0)] Status),
    /// AuditRead: each record's bytes exactly as on disk, so that the
    /// reader can re-hash them.
    #[n(14)]
    AuditRecords(#[n(0)] Vec<AuditRecordBytes>),
    /// DomainCreate: the shares, in custodian order.
    #[n(45)]
    DomainShares(#[n(0)] Vec<DomainShare>),
    /// DomainJoin, DomainShow: the domain id, or `None` for no domain.
    #[n(46)]
    Domain {
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        id: Option<Bytes>,
    },
    /// BackupImport: how many objects were restored, and the ones skipped
    /// because an object of the same class and CKA_ID (CKA_LABEL when it
    /// has no CKA_ID) exists already.
    #[n(47)]
    BackupImported {
        #[n(0)]
        restored: u64,
        #[n(1)]
        skipped: Vec<SkippedObject>,
    },
    /// ReplicaVersions.
    #[n(56)]
    ReplicaVersions(#[n(0)] Vec<ReplicaVersion>),
    /// ReplicaApply: whether the change was applied (false: the receiver
    /// holds a newer version, which wins).
    #[n(57)]
    ReplicaApplied(#[n(0)] bool),
}

/// Where one replicated token object stands: its `CKA_UNIQUE_ID`, a
/// version that every change raises, and whether it was deleted. Two
/// versions of one object are ordered by (`version`, `digest`): the digest
/// (SHA-256 of its attributes; all 0xff for a deletion) breaks the tie of
/// two boxes that changed the object concurrently, the same way on both.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ReplicaVersion {
    #[n(0)]
    pub unique_id: String,
    #[n(1)]
    pub version: u64,
    #[n(2)]
    #[cbor(with = "minicbor::bytes")]
    pub digest: Bytes,
    #[n(3)]
    pub deleted: bool,
}

/// One change of a token object as it travels between boxes: the new
/// version, and the object (keys as domain-wrapped blobs bound to the
/// attributes, as in a backup), or `None` for a deletion; `tag` is the
/// sending card's domain tag over both (the receiving card checks it
/// before anything is applied).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ReplicaChange {
    #[n(0)]
    pub version: ReplicaVersion,
    #[n(1)]
    pub object: Option<crate::backup::BackupObject>,
    #[n(2)]
    #[cbor(with = "minicbor::bytes")]
    pub tag: Bytes,
}
