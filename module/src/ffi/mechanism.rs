//! Reading `CK_MECHANISM` and its parameter structures.

use cryptoki_sys::{
    CK_EDDSA_PARAMS, CK_FALSE, CK_MECHANISM, CK_MECHANISM_TYPE, CK_RSA_PKCS_MGF_TYPE,
    CK_RSA_PKCS_OAEP_PARAMS, CK_RSA_PKCS_OAEP_SOURCE_TYPE, CK_RSA_PKCS_PSS_PARAMS,
};

use crate::error::Error;

/// `CK_RSA_PKCS_OAEP_PARAMS` with the label (the source data) copied out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OaepParams {
    pub hash_alg: CK_MECHANISM_TYPE,
    pub mgf: CK_RSA_PKCS_MGF_TYPE,
    pub source: CK_RSA_PKCS_OAEP_SOURCE_TYPE,
    pub label: Vec<u8>,
}

/// `CK_GCM_PARAMS` with the IV and the additional data copied out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GcmParams {
    pub iv: Vec<u8>,
    pub aad: Vec<u8>,
    pub tag_bits: cryptoki_sys::CK_ULONG,
}

/// A mechanism as the application passed it; the parameter is checked
/// against the mechanism by [`RawMechanism::no_parameter`] or
/// [`RawMechanism::pss_params`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawMechanism {
    pub ty: CK_MECHANISM_TYPE,
    parameter: *const std::ffi::c_void,
    parameter_len: usize,
}

/// Reads the application's mechanism; NULL is `CKR_ARGUMENTS_BAD`.
pub(crate) fn mechanism(mechanism: *const CK_MECHANISM) -> Result<RawMechanism, Error> {
    if mechanism.is_null() {
        return Err(Error::ArgumentsBad);
    }
    // SAFETY: non-NULL and, by the calling contract, a valid CK_MECHANISM.
    let m = unsafe { std::ptr::read_unaligned(mechanism) };
    Ok(RawMechanism {
        ty: m.mechanism,
        parameter: m.pParameter,
        parameter_len: usize::try_from(m.ulParameterLen).map_err(|_| Error::ArgumentsBad)?,
    })
}

impl RawMechanism {
    /// A mechanism built in Rust (tests, internal callers).
    #[cfg(test)]
    pub(crate) fn from_parts(
        ty: CK_MECHANISM_TYPE,
        parameter: *const std::ffi::c_void,
        len: usize,
    ) -> Self {
        RawMechanism {
            ty,
            parameter,
            parameter_len: len,
        }
    }

    /// For mechanisms without a parameter: pParameter must be NULL and
    /// ulParameterLen zero.
    pub(crate) fn no_parameter(&self) -> Result<(), Error> {
        if self.parameter.is_null() && self.parameter_len == 0 {
            Ok(())
        } else {
            Err(Error::MechanismParamInvalid(self.ty))
        }
    }

    /// The `CK_RSA_PKCS_PSS_PARAMS`, if present with exactly its size.
    pub(crate) fn pss_params(&self) -> Result<CK_RSA_PKCS_PSS_PARAMS, Error> {
        if self.parameter.is_null() || self.parameter_len != size_of::<CK_RSA_PKCS_PSS_PARAMS>() {
            return Err(Error::MechanismParamInvalid(self.ty));
        }
        // SAFETY: non-NULL, and the application declared exactly the size of
        // the structure; read_unaligned copes with any alignment.
        Ok(unsafe { std::ptr::read_unaligned(self.parameter.cast::<CK_RSA_PKCS_PSS_PARAMS>()) })
    }

    /// The `CK_RSA_PKCS_OAEP_PARAMS`, if present with exactly its size, and
    /// its label; a NULL label with a non-zero length is a bad parameter.
    pub(crate) fn oaep_params(&self) -> Result<OaepParams, Error> {
        let invalid = Error::MechanismParamInvalid(self.ty);
        if self.parameter.is_null() || self.parameter_len != size_of::<CK_RSA_PKCS_OAEP_PARAMS>() {
            return Err(invalid);
        }
        // SAFETY: non-NULL, and the application declared exactly the size of
        // the structure; read_unaligned copes with any alignment.
        let p =
            unsafe { std::ptr::read_unaligned(self.parameter.cast::<CK_RSA_PKCS_OAEP_PARAMS>()) };
        let label = super::input(p.pSourceData.cast::<u8>().cast_const(), p.ulSourceDataLen)
            .map_err(|_| invalid)?
            .to_vec();
        Ok(OaepParams {
            hash_alg: p.hashAlg,
            mgf: p.mgf,
            source: p.source,
            label,
        })
    }

    /// For CKM_EDDSA: whether the parameter asks for anything but pure
    /// EdDSA (prehash or a context). No parameter, or a `CK_EDDSA_PARAMS`
    /// with `phFlag` false and no context, is pure; a parameter of another
    /// size is invalid.
    pub(crate) fn eddsa_variant_requested(&self) -> Result<bool, Error> {
        if self.parameter.is_null() && self.parameter_len == 0 {
            return Ok(false);
        }
        if self.parameter.is_null() || self.parameter_len != size_of::<CK_EDDSA_PARAMS>() {
            return Err(Error::MechanismParamInvalid(self.ty));
        }
        // SAFETY: non-NULL, and the application declared exactly the size of
        // the structure; read_unaligned copes with any alignment.
        let p = unsafe { std::ptr::read_unaligned(self.parameter.cast::<CK_EDDSA_PARAMS>()) };
        Ok(p.phFlag != CK_FALSE || p.ulContextDataLen != 0)
    }
}

/// The parameters of the AES mechanisms (secret keys).
impl RawMechanism {
    /// A parameter that is a plain byte string (a CBC IV), copied out;
    /// NULL with a non-zero length is a bad parameter.
    pub(crate) fn bytes_parameter(&self) -> Result<Vec<u8>, Error> {
        let len = cryptoki_sys::CK_ULONG::try_from(self.parameter_len)
            .map_err(|_| Error::ArgumentsBad)?;
        super::input(self.parameter.cast::<u8>(), len)
            .map(<[u8]>::to_vec)
            .map_err(|_| Error::MechanismParamInvalid(self.ty))
    }

    /// The `CK_GCM_PARAMS`, if present with exactly its size, with its IV
    /// and additional data (NULL with a non-zero length is a bad
    /// parameter).
    pub(crate) fn gcm_params(&self) -> Result<GcmParams, Error> {
        use cryptoki_sys::CK_GCM_PARAMS;
        let invalid = Error::MechanismParamInvalid(self.ty);
        if self.parameter.is_null() || self.parameter_len != size_of::<CK_GCM_PARAMS>() {
            return Err(invalid);
        }
        // SAFETY: non-NULL, and the application declared exactly the size of
        // the structure; read_unaligned copes with any alignment.
        let p = unsafe { std::ptr::read_unaligned(self.parameter.cast::<CK_GCM_PARAMS>()) };
        let iv = super::input(p.pIv.cast_const(), p.ulIvLen).map_err(|_| invalid)?;
        let aad = super::input(p.pAAD.cast_const(), p.ulAADLen).map_err(|_| invalid)?;
        Ok(GcmParams {
            iv: iv.to_vec(),
            aad: aad.to_vec(),
            tag_bits: p.ulTagBits,
        })
    }

    /// The `CK_AES_CTR_PARAMS`, if present with exactly its size.
    pub(crate) fn ctr_params(&self) -> Result<cryptoki_sys::CK_AES_CTR_PARAMS, Error> {
        use cryptoki_sys::CK_AES_CTR_PARAMS;
        if self.parameter.is_null() || self.parameter_len != size_of::<CK_AES_CTR_PARAMS>() {
            return Err(Error::MechanismParamInvalid(self.ty));
        }
        // SAFETY: non-NULL, and the application declared exactly the size of
        // the structure; read_unaligned copes with any alignment.
        Ok(unsafe { std::ptr::read_unaligned(self.parameter.cast::<CK_AES_CTR_PARAMS>()) })
    }
}

/// `CK_ECDH1_DERIVE_PARAMS` with the shared data and the public data
/// copied out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ecdh1Params {
    pub kdf: cryptoki_sys::CK_EC_KDF_TYPE,
    pub shared_data: Vec<u8>,
    pub public_data: Vec<u8>,
}

/// The parameters of the key derivation mechanisms.
impl RawMechanism {
    /// The `CK_ECDH1_DERIVE_PARAMS`, if present with exactly its size; a
    /// NULL pointer with a non-zero length, or no public data, is a bad
    /// parameter.
    pub(crate) fn ecdh1_params(&self) -> Result<Ecdh1Params, Error> {
        use cryptoki_sys::CK_ECDH1_DERIVE_PARAMS;
        let invalid = Error::MechanismParamInvalid(self.ty);
        if self.parameter.is_null() || self.parameter_len != size_of::<CK_ECDH1_DERIVE_PARAMS>() {
            return Err(invalid);
        }
        // SAFETY: non-NULL, and the application declared exactly the size of
        // the structure; read_unaligned copes with any alignment.
        let p =
            unsafe { std::ptr::read_unaligned(self.parameter.cast::<CK_ECDH1_DERIVE_PARAMS>()) };
        let shared =
            super::input(p.pSharedData.cast_const(), p.ulSharedDataLen).map_err(|_| invalid)?;
        let public =
            super::input(p.pPublicData.cast_const(), p.ulPublicDataLen).map_err(|_| invalid)?;
        if public.is_empty() {
            return Err(invalid);
        }
        Ok(Ecdh1Params {
            kdf: p.kdf,
            shared_data: shared.to_vec(),
            public_data: public.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki_sys::*;

    #[test]
    fn parameter_presence_is_checked() {
        let none = RawMechanism::from_parts(CKM_ECDSA, std::ptr::null(), 0);
        assert_eq!(none.no_parameter(), Ok(()));
        assert_eq!(
            none.pss_params().unwrap_err(),
            Error::MechanismParamInvalid(CKM_ECDSA)
        );
        let byte = 0u8;
        let some = RawMechanism::from_parts(CKM_ECDSA, (&byte as *const u8).cast(), 1);
        assert_eq!(
            some.no_parameter(),
            Err(Error::MechanismParamInvalid(CKM_ECDSA))
        );
    }

    #[test]
    fn pss_params_need_their_exact_size() {
        let p = CK_RSA_PKCS_PSS_PARAMS {
            hashAlg: CKM_SHA256,
            mgf: CKG_MGF1_SHA256,
            sLen: 32,
        };
        let ptr = (&p as *const CK_RSA_PKCS_PSS_PARAMS).cast();
        let ok =
            RawMechanism::from_parts(CKM_RSA_PKCS_PSS, ptr, size_of::<CK_RSA_PKCS_PSS_PARAMS>());
        assert_eq!(ok.pss_params().unwrap().sLen, 32);
        let short = RawMechanism::from_parts(CKM_RSA_PKCS_PSS, ptr, 16);
        assert!(short.pss_params().is_err());
    }

    #[test]
    fn oaep_params_copy_the_label_and_check_it() {
        let mut label = *b"label";
        let mut p = CK_RSA_PKCS_OAEP_PARAMS {
            hashAlg: CKM_SHA256,
            mgf: CKG_MGF1_SHA256,
            source: CKZ_DATA_SPECIFIED,
            pSourceData: label.as_mut_ptr().cast(),
            ulSourceDataLen: 5,
        };
        let size = size_of::<CK_RSA_PKCS_OAEP_PARAMS>();
        let raw = |p: &CK_RSA_PKCS_OAEP_PARAMS, len| {
            RawMechanism::from_parts(
                CKM_RSA_PKCS_OAEP,
                (p as *const CK_RSA_PKCS_OAEP_PARAMS).cast(),
                len,
            )
        };
        let got = raw(&p, size).oaep_params().unwrap();
        assert_eq!(
            (got.hash_alg, got.label.as_slice()),
            (CKM_SHA256, &b"label"[..])
        );
        assert!(raw(&p, size - 1).oaep_params().is_err());
        p.pSourceData = std::ptr::null_mut();
        assert_eq!(
            raw(&p, size).oaep_params().unwrap_err(),
            Error::MechanismParamInvalid(CKM_RSA_PKCS_OAEP)
        );
        p.ulSourceDataLen = 0;
        assert_eq!(raw(&p, size).oaep_params().unwrap().label, b"");
    }

    #[test]
    fn ecdh1_params_copy_both_buffers_and_check_them() {
        let mut shared = *b"info";
        let mut point = [4u8; 65];
        let mut p = CK_ECDH1_DERIVE_PARAMS {
            kdf: CKD_SHA256_KDF,
            ulSharedDataLen: 4,
            pSharedData: shared.as_mut_ptr(),
            ulPublicDataLen: 65,
            pPublicData: point.as_mut_ptr(),
        };
        let size = size_of::<CK_ECDH1_DERIVE_PARAMS>();
        let raw = |p: &CK_ECDH1_DERIVE_PARAMS, len| {
            RawMechanism::from_parts(
                CKM_ECDH1_DERIVE,
                (p as *const CK_ECDH1_DERIVE_PARAMS).cast(),
                len,
            )
        };
        let got = raw(&p, size).ecdh1_params().unwrap();
        assert_eq!(got.kdf, CKD_SHA256_KDF);
        assert_eq!(got.shared_data, b"info");
        assert_eq!(got.public_data, [4u8; 65]);
        let invalid = Err(Error::MechanismParamInvalid(CKM_ECDH1_DERIVE));
        assert_eq!(raw(&p, size - 1).ecdh1_params(), invalid);
        assert_eq!(
            RawMechanism::from_parts(CKM_ECDH1_DERIVE, std::ptr::null(), size).ecdh1_params(),
            invalid
        );
        p.pSharedData = std::ptr::null_mut();
        assert_eq!(raw(&p, size).ecdh1_params(), invalid);
        p.ulSharedDataLen = 0;
        assert_eq!(raw(&p, size).ecdh1_params().unwrap().shared_data, b"");
        p.ulPublicDataLen = 0;
        assert_eq!(raw(&p, size).ecdh1_params(), invalid);
    }

    #[test]
    fn null_mechanism_is_bad_arguments() {
        assert_eq!(
            mechanism(std::ptr::null()).unwrap_err(),
            Error::ArgumentsBad
        );
    }
}
