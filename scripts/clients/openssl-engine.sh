#!/usr/bin/env bash
# OpenSSL 3 with the libp11 engine (Debian libengine-pkcs11-openssl): a key
# pair generated on the token, a CSR signed on the token with
# `openssl req -engine pkcs11 -keyform engine -key pkcs11:...`, verified by
# `openssl req -verify`, and its public key compared with the token's; the
# same for a self-signed certificate. OpenSSL unloads the engine, which
# finalizes the module, at process exit.
#
# Usage: scripts/clients/openssl-engine.sh [PROFILE_DIR]; see common.sh.
source "$(dirname "$0")/common.sh"
need openssl pkcs11-tool

start_token
use_openssl_engine

keypair EC:prime256v1 01 engine-ec
keypair rsa:2048 02 engine-rsa

key_url() { echo "pkcs11:token=$TOKEN_LABEL;object=$1;type=private"; }

# OpenSSL 3.0's `req -verify` exits 0 even when the signature is bad, so
# its message decides.
req_verifies() { # CSR [openssl req options...]
    local out
    out=$(openssl req -in "$@" -noout -verify 2>&1)
    echo "$out"
    grep -q "self-signature verify OK" <<<"$out"
}

# csr_round KIND LABEL ID [req options...]
csr_round() {
    local kind=$1 label=$2 id=$3
    shift 3
    local csr=$WORK/$kind.csr
    openssl req -new -engine pkcs11 -keyform engine -key "$(key_url "$label")" \
        -subj "/CN=mesign $kind test" -out "$csr" "$@" &&
        req_verifies "$csr" &&
        p11 --token-label "$TOKEN_LABEL" --read-object --type pubkey --id "$id" \
            -o "$WORK/$kind-pub.der" &&
        openssl pkey -pubin -inform DER -in "$WORK/$kind-pub.der" -out "$WORK/$kind-token.pem" &&
        openssl req -in "$csr" -noout -pubkey >"$WORK/$kind-csr.pem" &&
        cmp "$WORK/$kind-token.pem" "$WORK/$kind-csr.pem"
}
check "ECDSA P-256: CSR signed on the token, verified by openssl, key is the token's" \
    csr_round ec engine-ec 01 -sha256
check "RSA-2048: CSR signed on the token, verified by openssl, key is the token's" \
    csr_round rsa engine-rsa 02 -sha256
check "RSA-2048 PSS: CSR signed on the token, verified by openssl" \
    csr_round rsa-pss engine-rsa 02 -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest

tampered_rejected() {
    # Flip one byte of the signature (the last bytes of the DER) and expect
    # openssl to refuse it: the check above must be able to fail.
    openssl req -in "$WORK/ec.csr" -outform DER -out "$WORK/ec.csr.der"
    python3 - "$WORK/ec.csr.der" <<'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[-3] ^= 0x01
open(p, "wb").write(b)
EOF
    ! req_verifies "$WORK/ec.csr.der" -inform DER
}
check "a CSR with a tampered signature is rejected" tampered_rejected

self_signed() {
    openssl req -new -x509 -days 2 -engine pkcs11 -keyform engine -key "$(key_url engine-ec)" \
        -subj "/CN=mesign engine self-signed" -sha384 -out "$WORK/self.pem" &&
        openssl verify -CAfile "$WORK/self.pem" "$WORK/self.pem"
}
check "self-signed certificate signed on the token (ECDSA-SHA384) verifies" self_signed

summary
