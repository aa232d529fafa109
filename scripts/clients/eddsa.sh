#!/usr/bin/env bash
# Ed25519 with pkcs11-tool (OpenSC): `--keypairgen --key-type
# EC:edwards25519` makes a key pair on the token, `--sign -m EDDSA` signs a
# document with it, and OpenSSL (`pkeyutl -verify -rawin`) verifies the
# signature with the public key read from the token's CKA_EC_POINT (wrapped
# into an RFC 8410 SubjectPublicKeyInfo here, since OpenSC 0.23 exports no
# SPKI for Edwards keys). The token verifies it too, and a changed document
# fails both.
#
# Usage: scripts/clients/eddsa.sh [PROFILE_DIR]; see common.sh.
source "$(dirname "$0")/common.sh"
need openssl pkcs11-tool xxd

start_token

mechanisms_listed() {
    p11 --token-label "$TOKEN_LABEL" -M >"$WORK/mechanisms.txt" &&
        grep -Eq '^ *EC-EDWARDS-KEY-PAIR-GEN.*generate_key_pair' "$WORK/mechanisms.txt" &&
        grep -Eq '^ *EDDSA.*sign.*verify' "$WORK/mechanisms.txt"
}
check "pkcs11-tool -M lists EC-EDWARDS-KEY-PAIR-GEN and EDDSA" mechanisms_listed

check "Ed25519 key pair generated with --key-type EC:edwards25519" \
    keypair EC:edwards25519 0e ed-signer

# The public key: the 32 bytes inside CKA_EC_POINT's OCTET STRING, behind
# the fixed DER prefix of an Ed25519 SubjectPublicKeyInfo.
public_key() {
    local point
    point=$(p11 --token-label "$TOKEN_LABEL" -O --type pubkey --id 0e |
        awk '/EC_POINT:/ { print $2 }')
    [ "${#point}" -eq 68 ] && [ "${point:0:4}" = 0420 ] &&
        printf '302a300506032b6570032100%s' "${point:4}" | xxd -r -p >"$WORK/ed-pub.der" &&
        openssl pkey -pubin -inform DER -in "$WORK/ed-pub.der" -noout -text | grep -q ED25519
}
check "CKA_EC_POINT is a DER OCTET STRING around a 32-byte Ed25519 point" public_key

printf 'Contract no. %s, signed with Ed25519.\n' "$(date +%s%N)" >"$WORK/doc.txt"
sign() {
    p11_user --sign --id 0e -m EDDSA -i "$WORK/doc.txt" -o "$WORK/doc.sig" &&
        [ "$(stat -c %s "$WORK/doc.sig")" -eq 64 ]
}
check "pkcs11-tool --sign -m EDDSA gives a 64-byte signature" sign

openssl_verifies() {
    openssl pkeyutl -verify -pubin -inkey "$WORK/ed-pub.der" -keyform DER -rawin \
        -in "$WORK/doc.txt" -sigfile "$WORK/doc.sig"
}
check "OpenSSL verifies the token's signature" openssl_verifies

# pkcs11-tool 0.23 exits 0 for a bad signature; its message tells.
token_says() {
    p11_user --verify --id 0e -m EDDSA -i "$WORK/doc.txt" --signature-file "$WORK/doc.sig" \
        2>&1 | grep -q "$1"
}
token_verifies() { token_says "Signature is valid"; }
check "the token verifies its signature (--verify -m EDDSA)" token_verifies

changed_document_fails() {
    # Only meaningful once the original verified.
    openssl_verifies &&
        printf 'x' >>"$WORK/doc.txt" &&
        ! openssl_verifies &&
        token_says "Invalid signature"
}
check "a changed document fails OpenSSL's and the token's verification" changed_document_fails

summary
