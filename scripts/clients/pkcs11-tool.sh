#!/usr/bin/env bash
# OpenSC pkcs11-tool's own self-tests against the module: `--test --login`
# (digests, random, signatures with length queries and BUFFER_TOO_SMALL,
# verification, session and object walks), `--test-ec` and `--test-fork`
# (fork, C_Initialize in the child, parent keeps working).
#
# pkcs11-tool's RSA signature test signs a SHA-1 DigestInfo with CKM_RSA_PKCS
# and aborts if that fails. Our card refuses SHA-1 signatures (a deliberate
# decision: NIST SP 800-131A disallows SHA-1 for signature generation), so
# against our module `--test` runs on a token holding EC keys, and a second
# run with an RSA key checks that the refusal is the clean
# CKR_DATA_INVALID at C_Sign, not a crash or a stray code.
#
# Usage: scripts/clients/pkcs11-tool.sh [PROFILE_DIR]; see common.sh.
source "$(dirname "$0")/common.sh"
need pkcs11-tool openssl

start_token

keypair EC:prime256v1 01 ec-p256
keypair EC:secp384r1 02 ec-p384

self_test() {
    local out
    out=$(p11_user --test 2>&1) || { echo "$out"; return 1; }
    echo "$out"
    # pkcs11-tool prints "No errors" only when every sub-test passed.
    grep -q "No errors" <<<"$out"
}
check "pkcs11-tool --test --login (EC keys)" self_test

# expect_refusal NAME PATTERN ARGS...: the pkcs11-tool run must fail, and
# with exactly the return value in PATTERN.
expect_refusal() {
    local pattern=$1 out
    shift
    if out=$(p11_user "$@" 2>&1); then
        echo "$out"
        echo "expected a failure matching: $pattern"
        return 1
    fi
    echo "$out"
    grep -q "$pattern" <<<"$out"
}

keypair rsa:2048 03 rsa-2048
if [ "$TARGET" = mesign ]; then
    check "pkcs11-tool --test with an RSA key: the SHA-1 DigestInfo is refused with CKR_DATA_INVALID" \
        expect_refusal "C_Sign failed: rv = CKR_DATA_INVALID" --test
else
    # SoftHSMv2 2.6.1 lists no CKF_HW mechanisms, so pkcs11-tool skips its
    # signature tests; it then fails OAEP decryption with a label.
    check "pkcs11-tool --test with an RSA key: SoftHSM fails OAEP with a label (CKR_ARGUMENTS_BAD)" \
        expect_refusal "C_DecryptInit failed: rv = CKR_ARGUMENTS_BAD" --test
fi

fork_test() {
    local out
    out=$(p11_user --test-fork 2>&1) || { echo "$out"; return 1; }
    echo "$out"
    ! grep -qi "error\|failed" <<<"$out"
}
if [ "$TARGET" = mesign ]; then
    check "pkcs11-tool --test-fork: the child initialises afresh, the parent keeps working" fork_test
else
    # SoftHSMv2 keeps its state across fork(): the child's C_Initialize
    # answers CKR_CRYPTOKI_ALREADY_INITIALIZED.
    check "pkcs11-tool --test-fork: SoftHSM's child sees CKR_CRYPTOKI_ALREADY_INITIALIZED" \
        expect_refusal "C_Initialize in child" --test-fork
fi

summary
