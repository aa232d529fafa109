#!/usr/bin/env bash
# NSS (libnss3-tools) against the module: `modutil -add` registers it in a
# fresh NSS database, `modutil -list` shows the token, `certutil -K` lists
# the keys generated on the token, `certutil -L` the certificate written to
# it, and `certutil -R` makes a certificate request signed on the token,
# verified by OpenSSL against the token's public key. Every NSS tool loads
# and finalizes the module once per run (C_Finalize at process exit).
#
# Usage: scripts/clients/nss.sh [PROFILE_DIR]; see common.sh.
source "$(dirname "$0")/common.sh"
need modutil certutil pkcs11-tool openssl

start_token
CERT=$(cd "$(dirname "$0")/../.." && pwd)/softhsm-tests/testdata/cert-p256.der

keypair EC:prime256v1 01 nss-ec
keypair rsa:2048 02 nss-rsa
p11_user --write-object "$CERT" --type cert --id 03 --label nss-cert >/dev/null

DB=sql:$WORK/nssdb
mkdir -p "$WORK/nssdb"
printf '%s\n' "$USER_PIN" >"$WORK/pin.txt"
# modutil asks for confirmation unless -force.
check "certutil -N creates a database" certutil -N -d "$DB" --empty-password
check "modutil -add registers the module" \
    modutil -force -dbdir "$DB" -add under-test -libfile "$MODULE"

module_listed() {
    local out
    out=$(modutil -force -dbdir "$DB" -list under-test)
    echo "$out"
    grep -q "Token Name: $TOKEN_LABEL" <<<"$out" && grep -q "Status: Enabled" <<<"$out"
}
check "modutil -list shows the token" module_listed

keys_listed() {
    local out
    out=$(certutil -K -d "$DB" -h "$TOKEN_LABEL" -f "$WORK/pin.txt")
    echo "$out"
    grep -q "ec .*nss-ec" <<<"$out" && grep -q "rsa .*nss-rsa" <<<"$out"
}
check "certutil -K lists both keys on the token" keys_listed

certs_listed() {
    local out
    out=$(certutil -L -d "$DB" -h "$TOKEN_LABEL" -f "$WORK/pin.txt")
    echo "$out"
    grep -q "$TOKEN_LABEL:nss-cert" <<<"$out"
}
check "certutil -L lists the certificate on the token" certs_listed

request_signed() { # KEY_LABEL KEY_ID
    local req=$WORK/$1.req
    # -k takes the key's CKA_ID in hex; NSS finds the private key on the token.
    certutil -R -d "$DB" -h "$TOKEN_LABEL" -f "$WORK/pin.txt" -k "$2" \
        -s "CN=nss $1" -Z SHA256 -a -o "$req" -z "$CERT" &&
        p11 --token-label "$TOKEN_LABEL" --read-object --type pubkey --label "$1" \
            -o "$WORK/$1.der" &&
        openssl pkey -pubin -inform DER -in "$WORK/$1.der" -out "$WORK/$1-token.pem" &&
        openssl req -in "$req" -noout -pubkey >"$WORK/$1-req.pem" &&
        cmp "$WORK/$1-token.pem" "$WORK/$1-req.pem" &&
        openssl req -in "$req" -noout -verify 2>&1 | tee /dev/stderr | grep -q "verify OK"
}
check "certutil -R: ECDSA request signed on the token, verified by OpenSSL" \
    request_signed nss-ec 01
check "certutil -R: RSA request signed on the token, verified by OpenSSL" \
    request_signed nss-rsa 02

check "modutil -delete unregisters the module" modutil -force -dbdir "$DB" -delete under-test

summary
