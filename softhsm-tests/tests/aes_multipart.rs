//! Multi-part AES (C_EncryptUpdate / C_EncryptFinal, C_DecryptUpdate /
//! C_DecryptFinal) with CKM_AES_CBC_PAD, CKM_AES_CTR and CKM_AES_GCM,
//! against our module and SoftHSMv2: pieces of uneven sizes give exactly
//! the single-part result and RustCrypto's (`cbc`, `ctr`, `aes-gcm`) for a
//! key created from a known value, messages longer than one card request
//! stream through, and a changed GCM tag fails at C_DecryptFinal.

use aes::cipher::{BlockEncryptMut, KeyIvInit, StreamCipher};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use cryptoki::error::RvError;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki_sys::{CKR_OK, CKR_OPERATION_ACTIVE};
use softhsm_tests::ffi::Output;
use softhsm_tests::{conformance, expect_rv, Divergence, Kind, Target};

const KEY: [u8; 32] = *b"multi-part AES key, 32 bytes ok!";

/// Piece sizes that cross block boundaries in every way, then the rest.
const PIECES: &[usize] = &[0, 1, 15, 16, 17, 3, 33, 100, 5];

fn aes_key(s: &Session) -> ObjectHandle {
    s.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Value(KEY.to_vec()),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
    ])
    .expect("C_CreateObject AES key")
}

fn message(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

/// `data` cut into PIECES (cycling), the last piece whatever is left.
fn pieces(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    for &size in PIECES.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        out.push(piece);
        rest = tail;
    }
    out
}

fn encrypt_in_pieces(s: &Session, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in pieces(data) {
        out.extend(s.encrypt_update(piece).expect("C_EncryptUpdate"));
    }
    out.extend(s.encrypt_final().expect("C_EncryptFinal"));
    out
}

fn decrypt_in_pieces(t: &Target, s: &Session, data: &[u8]) -> cryptoki::error::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut pieces = pieces(data);
    if t.diverges(Divergence::SoftHsmDecryptUpdateEmptyPartLength) {
        pieces.retain(|p| !p.is_empty());
    }
    for piece in pieces {
        out.extend(s.decrypt_update(piece)?);
    }
    out.extend(s.decrypt_final()?);
    Ok(out)
}

fn cbc_pad_in_pieces_matches_single_part_and_rustcrypto(t: &Target) {
    let s = t.user_session();
    let key = aes_key(&s);
    let iv = [0x3cu8; 16];
    for len in [0, 1, 16, 31, 32, 250] {
        let data = message(len);
        let independent = cbc::Encryptor::<aes::Aes256>::new(&KEY.into(), &iv.into())
            .encrypt_padded_vec_mut::<aes::cipher::block_padding::Pkcs7>(&data);
        let single = s.encrypt(&Mechanism::AesCbcPad(iv), key, &data).unwrap();
        assert_eq!(single, independent, "single part, {len} bytes");
        s.encrypt_init(&Mechanism::AesCbcPad(iv), key).unwrap();
        assert_eq!(encrypt_in_pieces(&s, &data), independent, "{len} bytes");
        s.decrypt_init(&Mechanism::AesCbcPad(iv), key).unwrap();
        assert_eq!(decrypt_in_pieces(t, &s, &independent).unwrap(), data);
    }
    // A ciphertext that is not whole blocks fails at C_DecryptFinal.
    let data = message(40);
    let sealed = s.encrypt(&Mechanism::AesCbcPad(iv), key, &data).unwrap();
    s.decrypt_init(&Mechanism::AesCbcPad(iv), key).unwrap();
    s.decrypt_update(&sealed[..40]).unwrap();
    let got = s.decrypt_final();
    if t.kind() == Kind::Mesign {
        expect_rv(got, RvError::EncryptedDataLenRange);
    } else {
        assert!(got.is_err(), "SoftHSMv2 accepted a partial block");
    }
}

fn ctr_in_pieces_matches_single_part_and_rustcrypto(t: &Target) {
    let s = t.user_session();
    let key = aes_key(&s);
    let counter = [0x77u8; 16];
    let data = message(301);
    let mut independent = data.clone();
    ctr::Ctr128BE::<aes::Aes256>::new(&KEY.into(), &counter.into())
        .apply_keystream(&mut independent);
    let init = |encrypt| {
        let rv = t
            .raw()
            .aes_ctr_init(s.handle(), key.handle(), 128, counter, encrypt);
        assert_eq!(rv, CKR_OK);
    };
    init(true);
    let single = t
        .raw()
        .encrypt(s.handle(), &data, Output::Bytes(data.len()));
    assert_eq!((single.rv, &single.bytes), (CKR_OK, &independent));
    init(true);
    assert_eq!(encrypt_in_pieces(&s, &data), independent);
    init(false);
    assert_eq!(decrypt_in_pieces(t, &s, &independent).unwrap(), data);
}

fn gcm_in_pieces_matches_single_part_and_rustcrypto(t: &Target) {
    let s = t.user_session();
    let key = aes_key(&s);
    let data = message(333);
    let aad = b"header".as_slice();
    let independent = aes_gcm::Aes256Gcm::new(&KEY.into())
        .encrypt(&[4u8; 12].into(), Payload { msg: &data, aad })
        .unwrap();
    let mut iv = [4u8; 12];
    let single = s.encrypt(&gcm(&mut iv, aad), key, &data).unwrap();
    assert_eq!(single, independent);
    s.encrypt_init(&gcm(&mut iv, aad), key).unwrap();
    assert_eq!(encrypt_in_pieces(&s, &data), independent);
    s.decrypt_init(&gcm(&mut iv, aad), key).unwrap();
    assert_eq!(decrypt_in_pieces(t, &s, &independent).unwrap(), data);
    // A changed tag fails at the end, and releases nothing.
    let mut forged = independent.clone();
    *forged.last_mut().unwrap() ^= 1;
    s.decrypt_init(&gcm(&mut iv, aad), key).unwrap();
    let got = decrypt_in_pieces(t, &s, &forged);
    if t.diverges(Divergence::SoftHsmSymmetricDecryptErrorsAreGeneral) {
        assert!(got.is_err(), "SoftHSMv2 accepted a forged tag");
    } else {
        expect_rv(got, RvError::EncryptedDataInvalid);
    }
}

/// cryptoki's GcmParams borrows the IV; each init gets a fresh borrow.
fn gcm<'a>(iv: &'a mut [u8; 12], aad: &'a [u8]) -> Mechanism<'a> {
    Mechanism::AesGcm(GcmParams::new(iv.as_mut_slice(), aad, 128.into()).unwrap())
}

fn long_messages_stream_through(t: &Target) {
    // Longer than one card request (48 KiB): CBC and CTR stream.
    let s = t.user_session();
    let key = aes_key(&s);
    let iv = [9u8; 16];
    let data = message(100 * 1024 + 5);
    let independent = cbc::Encryptor::<aes::Aes256>::new(&KEY.into(), &iv.into())
        .encrypt_padded_vec_mut::<aes::cipher::block_padding::Pkcs7>(&data);
    s.encrypt_init(&Mechanism::AesCbcPad(iv), key).unwrap();
    let mut sealed = Vec::new();
    for chunk in data.chunks(70 * 1024) {
        sealed.extend(s.encrypt_update(chunk).unwrap());
    }
    sealed.extend(s.encrypt_final().unwrap());
    assert_eq!(sealed, independent);
    s.decrypt_init(&Mechanism::AesCbcPad(iv), key).unwrap();
    let mut opened = s.decrypt_update(&sealed).unwrap();
    opened.extend(s.decrypt_final().unwrap());
    assert_eq!(opened, data);
    if t.kind() == Kind::Mesign {
        // Our limits: GCM goes to the card in one request (48 KiB), and a
        // CTR counter may not wrap (8 counter bits at 0xfe: two blocks).
        let aad = b"".as_slice();
        let mut iv = [2u8; 12];
        s.encrypt_init(&gcm(&mut iv, aad), key).unwrap();
        s.encrypt_update(&data[..40 * 1024]).unwrap();
        expect_rv(s.encrypt_update(&data[..10 * 1024]), RvError::DataLenRange);
        let mut counter = [0u8; 16];
        counter[15] = 0xfe;
        let rv = t
            .raw()
            .aes_ctr_init(s.handle(), key.handle(), 8, counter, true);
        assert_eq!(rv, CKR_OK);
        assert_eq!(s.encrypt_update(&[0; 20]).unwrap().len(), 16);
        assert_eq!(s.encrypt_update(&[0; 12]).unwrap().len(), 16);
        expect_rv(s.encrypt_update(&[0; 16]), RvError::DataLenRange);
    }
}

fn single_part_after_an_update_is_refused(t: &Target) {
    let s = t.user_session();
    let key = aes_key(&s);
    let iv = [1u8; 16];
    s.encrypt_init(&Mechanism::AesCbcPad(iv), key).unwrap();
    s.encrypt_update(&[1; 20]).unwrap();
    let got = t.raw().encrypt(s.handle(), &[1; 20], Output::Bytes(64));
    let want = if t.diverges(Divergence::SoftHsmSinglePartAfterUpdate) {
        CKR_OK
    } else {
        CKR_OPERATION_ACTIVE
    };
    assert_eq!(got.rv, want);
}

conformance!(ready =>
    cbc_pad_in_pieces_matches_single_part_and_rustcrypto,
    ctr_in_pieces_matches_single_part_and_rustcrypto,
    gcm_in_pieces_matches_single_part_and_rustcrypto,
    long_messages_stream_through,
    single_part_after_an_update_is_refused,
);
