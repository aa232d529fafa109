#!/usr/bin/env bash
# python-pkcs11's own test suite (from its sdist) against the module,
# pointed at it by PKCS11_MODULE / PKCS11_TOKEN_LABEL / PKCS11_TOKEN_PIN /
# PKCS11_TOKEN_SO_PIN. Prints a TESTCASE line per test and the counts; for
# our module every failure must be one of the documented decisions below
# (the Rust test in softhsm-tests/tests/clients.rs also checks that every
# test passing against SoftHSM passes, is skipped for a mechanism the token
# does not offer, or is documented here).
#
# Usage: scripts/clients/python-pkcs11.sh [PROFILE_DIR]; see common.sh.
source "$(dirname "$0")/common.sh"
need python3 pkcs11-tool

# Test id prefix | message the failure must carry | why (a deliberate decision)
DOCUMENTED=(
    "tests.test_rsa.RSATests.|KeySizeRange||setUp generates RSA-1024 keys: the token refuses RSA below 2048 bits (CKR_KEY_SIZE_RANGE)"
    "tests.test_x509.X509Tests.test_self_sign_certificate|KeySizeRange||RSA-1024 key generation refused"
    "tests.test_x509.X509Tests.test_sign_csr|KeySizeRange||RSA-1024 key generation refused"
    "tests.test_public_key_external.ExternalPublicKeyTests.test_rsa|KeySizeRange||RSA-1024 key generation refused"
    "tests.test_public_key_external.ExternalPublicKeyTests.test_terrible_hybrid_file_encryption_app|KeySizeRange||RSA-1024 key generation refused"
    "tests.test_sessions.SessionTests.test_generate_keypair|KeySizeRange||RSA-1024 key generation refused"
    "tests.test_aes.AESTests.test_encrypt_gcm_with_custom_tag_length|MechanismParamInvalid||AES-GCM takes 128-bit tags only (aws-lc-rs appends full tags)"
    "tests.test_digest.DigestTests.test_digest_key|FunctionNotSupported||C_DigestKey is not offered"
    "tests.test_threading.ThreadingTests.test_concurrency|AssertionError||the suite encrypts 4 MiB with AES-CBC-PAD in one C_Encrypt: one request carries at most 48 KiB (streaming with C_EncryptUpdate works)"
    "tests.test_ecc.ECCTests.test_import_key_pair|TemplateInconsistent||private keys cannot be imported: keys are generated on the card"
    "tests.test_ecc.ECCTests.test_sign_ed448|0x140||Ed448 is not offered (CKR_CURVE_NOT_SUPPORTED): aws-lc-rs has no Ed448"
    "tests.test_sessions.SessionTests.test_seed_random|RandomSeedNotSupported||the card's DRBG takes no external seed"
    "tests.test_aes.AESTests.test_wrap|AttributeError||the suite wraps with its default AES key, which the edit below (the same for every module) makes a data key without CKA_WRAP, and compares CKA_VALUE, which never leaves the card (AES key wrap itself: softhsm-tests/tests/wrapping.rs)"
    "tests.test_ecc.ECCTests.test_derive_key|0x140||the suite's ECDH uses P-192 (prime192v1): the card has P-256, P-384 and P-521 only (CKR_CURVE_NOT_SUPPORTED)"
    "tests.test_public_key_external.ExternalPublicKeyTests.test_ecdh|AttributeSensitive||the suite reads the derived key's CKA_VALUE: secret key values never leave the card (CKR_ATTRIBUTE_SENSITIVE even when not sensitive)"
)

start_token
python_env
SRC=$(unpacked_sdist python-pkcs11 "$PYTHON_PKCS11_VERSION")
# Run the tests outside the sdist, so `import pkcs11` finds the installed,
# compiled package rather than the sdist's uncompiled sources.
mkdir -p "$WORK/suite"
cp -r "$SRC/tests" "$WORK/suite/tests"
# The same edit for every module: python-pkcs11's default AES key asks for
# every usage (encrypt, decrypt, sign, verify, wrap, unwrap), which is the
# combination the token refuses (CKA_WRAP with CKA_DECRYPT, CKA_UNWRAP with
# CKA_ENCRYPT or CKA_DECRYPT: the API-attack rule, daemon/src/key_roles.rs).
# Unchanged, every AES, digest and session test would stop at generating
# that key; with the default narrowed to a data key (no wrap, no unwrap)
# they test AES on both modules.
cat >"$WORK/suite/tests/conftest.py" <<'PY'
import pkcs11
from pkcs11.defaults import DEFAULT_KEY_CAPABILITIES

DEFAULT_KEY_CAPABILITIES[pkcs11.KeyType.AES] &= ~(
    pkcs11.MechanismFlag.WRAP | pkcs11.MechanismFlag.UNWRAP
)
PY

export PKCS11_MODULE=$MODULE PKCS11_TOKEN_LABEL=$TOKEN_LABEL
export PKCS11_TOKEN_PIN=$USER_PIN PKCS11_TOKEN_SO_PIN=$SO_PIN
MESIGN_SUITE_RESET=python-pkcs11 run_pytest "$WORK/results" "$WORK/suite/tests" | tee "$WORK/outcomes"
judge_outcomes "$WORK/outcomes" python-pkcs11
summary
