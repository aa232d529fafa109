//! A PKCS#11 module under test: loaded, its token initialized, the user
//! logged in and the benchmark keys generated once.

use std::path::Path;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use crate::error::BenchError;
use crate::source::Source;
use crate::verify::PublicKey;
use crate::workload::{KeyKind, Op};

/// The Security Officer PIN each token gets.
pub const SO_PIN: &str = "12345678";
/// The user PIN each token gets.
pub const USER_PIN: &str = "123456";
/// The label each token gets.
pub const TOKEN_LABEL: &str = "mesign-bench";

/// A signing key on a token.
pub struct TokenKey {
    /// Which key.
    pub kind: KeyKind,
    /// The private key, used by C_Sign.
    pub private: ObjectHandle,
    /// The public key as read back, for verification.
    pub public: PublicKey,
}

/// Opens sessions on a token from any thread.
#[derive(Clone)]
pub struct SessionSource {
    source: Source,
    pkcs11: Pkcs11,
    slot: Slot,
}

impl SessionSource {
    /// A new read-only session on the benchmark token.
    pub fn open(&self) -> Result<Session, BenchError> {
        self.pkcs11
            .open_ro_session(self.slot)
            .map_err(|error| BenchError::Pkcs11 {
                source_kind: self.source,
                step: "C_OpenSession",
                error,
            })
    }

    /// A new read-write session on the benchmark token.
    pub fn open_rw(&self) -> Result<Session, BenchError> {
        self.pkcs11
            .open_rw_session(self.slot)
            .map_err(|error| BenchError::Pkcs11 {
                source_kind: self.source,
                step: "C_OpenSession",
                error,
            })
    }
}

/// A loaded module with a ready token.
pub struct Token {
    source: Source,
    pkcs11: Pkcs11,
    slot: Slot,
    /// Login is per application and ends with its last session; this one
    /// stays open so the client threads' sessions are always logged in.
    keeper: Session,
    keys: Vec<TokenKey>,
}

impl Token {
    /// Loads the module at `path`, initializes its first free token with the
    /// benchmark PINs and logs the user in.
    pub fn open(source: Source, path: &Path) -> Result<Self, BenchError> {
        let fail = |step| {
            move |error| BenchError::Pkcs11 {
                source_kind: source,
                step,
                error,
            }
        };
        let pkcs11 = Pkcs11::new(path).map_err(fail("load the module"))?;
        pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(fail("C_Initialize"))?;
        let free = pkcs11
            .get_slots_with_token()
            .map_err(fail("C_GetSlotList"))?
            .into_iter()
            .find(|slot| {
                pkcs11
                    .get_token_info(*slot)
                    .is_ok_and(|info| !info.token_initialized())
            })
            .ok_or(BenchError::NoFreeSlot {
                source_kind: source,
            })?;
        let so_pin = AuthPin::from(SO_PIN);
        pkcs11
            .init_token(free, &so_pin, TOKEN_LABEL)
            .map_err(fail("C_InitToken"))?;
        // SoftHSM renumbers its slots after C_InitToken: find it by label.
        let slot = pkcs11
            .get_slots_with_initialized_token()
            .map_err(fail("C_GetSlotList"))?
            .into_iter()
            .find(|slot| {
                pkcs11
                    .get_token_info(*slot)
                    .is_ok_and(|info| info.label() == TOKEN_LABEL)
            })
            .ok_or(BenchError::NoFreeSlot {
                source_kind: source,
            })?;
        let keeper = pkcs11
            .open_rw_session(slot)
            .map_err(fail("C_OpenSession"))?;
        keeper
            .login(UserType::So, Some(&so_pin))
            .map_err(fail("C_Login(SO)"))?;
        keeper
            .init_pin(&AuthPin::from(USER_PIN))
            .map_err(fail("C_InitPIN"))?;
        keeper.logout().map_err(fail("C_Logout"))?;
        keeper
            .login(UserType::User, Some(&AuthPin::from(USER_PIN)))
            .map_err(fail("C_Login(User)"))?;
        Ok(Self {
            source,
            pkcs11,
            slot,
            keeper,
            keys: Vec::new(),
        })
    }

    /// Which module this is.
    pub fn source(&self) -> Source {
        self.source
    }

    /// A new read-only session, for searching.
    pub fn session(&self) -> Result<Session, BenchError> {
        self.sessions().open()
    }

    /// What client threads open their sessions with (the keeper session
    /// cannot cross threads, so `Token` itself is not shared).
    pub fn sessions(&self) -> SessionSource {
        SessionSource {
            source: self.source,
            pkcs11: self.pkcs11.clone(),
            slot: self.slot,
        }
    }

    /// A new read-write session, for creating objects.
    pub fn rw_session(&self) -> Result<Session, BenchError> {
        self.pkcs11
            .open_rw_session(self.slot)
            .map_err(|error| self.error("C_OpenSession", error))
    }

    /// Wraps a cryptoki error with this module's name.
    pub fn error(&self, step: &'static str, error: cryptoki::error::Error) -> BenchError {
        BenchError::Pkcs11 {
            source_kind: self.source,
            step,
            error,
        }
    }

    /// Generates (once) the token key pair `kind` and reads its public half.
    pub fn ensure_key(&mut self, kind: KeyKind) -> Result<(), BenchError> {
        if self.keys.iter().any(|k| k.kind == kind) {
            return Ok(());
        }
        let key = self.generate(kind)?;
        self.keys.push(key);
        Ok(())
    }

    /// The key `op` signs with; [`Token::ensure_key`] must have run.
    pub fn key(&self, op: Op) -> &TokenKey {
        let kind = op.key_kind();
        self.keys
            .iter()
            .find(|k| k.kind == kind)
            .expect("keys are generated before any run")
    }

    fn generate(&self, kind: KeyKind) -> Result<TokenKey, BenchError> {
        let label = kind.label().as_bytes().to_vec();
        let mut public_template = vec![
            Attribute::Token(true),
            Attribute::Verify(true),
            Attribute::Label(label.clone()),
            Attribute::Id(label.clone()),
        ];
        let private_template = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Sign(true),
            Attribute::Label(label.clone()),
            Attribute::Id(label),
        ];
        let mechanism = match kind.ec_params() {
            None => {
                public_template.push(Attribute::ModulusBits(2048.into()));
                public_template.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
                Mechanism::RsaPkcsKeyPairGen
            }
            Some(params) => {
                public_template.push(Attribute::EcParams(params.to_vec()));
                Mechanism::EccKeyPairGen
            }
        };
        let (public, private) = self
            .keeper
            .generate_key_pair(&mechanism, &public_template, &private_template)
            .map_err(|error| self.error("C_GenerateKeyPair", error))?;
        let public = self.read_public(kind, public)?;
        Ok(TokenKey {
            kind,
            private,
            public,
        })
    }

    fn read_public(&self, kind: KeyKind, handle: ObjectHandle) -> Result<PublicKey, BenchError> {
        let wanted: &[AttributeType] = match kind {
            KeyKind::Rsa2048 => &[AttributeType::Modulus, AttributeType::PublicExponent],
            KeyKind::P256 | KeyKind::P384 => &[AttributeType::EcPoint],
        };
        let attributes = self
            .keeper
            .get_attributes(handle, wanted)
            .map_err(|error| self.error("C_GetAttributeValue", error))?;
        let (mut modulus, mut exponent, mut point) = (None, None, None);
        for attribute in attributes {
            match attribute {
                Attribute::Modulus(v) => modulus = Some(v),
                Attribute::PublicExponent(v) => exponent = Some(v),
                Attribute::EcPoint(v) => point = Some(v),
                _ => {}
            }
        }
        let op = match kind {
            KeyKind::Rsa2048 => Op::RsaPkcs,
            KeyKind::P256 => Op::P256,
            KeyKind::P384 => Op::P384,
        };
        let public = match (kind, modulus, exponent, point) {
            (KeyKind::Rsa2048, Some(modulus), Some(exponent), _) if modulus.len() >= 256 => {
                Some(PublicKey::Rsa { modulus, exponent })
            }
            (KeyKind::P256 | KeyKind::P384, _, _, Some(point)) => {
                PublicKey::from_ec_point(kind, &point)
            }
            _ => None,
        };
        public.ok_or(BenchError::BadPublicKey {
            source_kind: self.source,
            op,
        })
    }
}
