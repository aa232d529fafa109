#!/usr/bin/env bash
# S/MIME decryption with the key on the token: OpenSSL encrypts a message
# (`openssl cms -encrypt`, RSA key transport with PKCS#1 v1.5, OAEP with
# SHA-1 and OAEP with SHA-256) to a certificate whose key pair was generated
# on the token, and `openssl cms -decrypt` through the libp11 engine
# (libengine-pkcs11-openssl) recovers it byte for byte. The certificate is
# issued by a throwaway CA for the token's public key (the key itself is
# decrypt-only). A message for another recipient must not decrypt.
#
# Usage: scripts/clients/cms-decrypt.sh [PROFILE_DIR]; see common.sh.
source "$(dirname "$0")/common.sh"
need openssl pkcs11-tool cmp

start_token
use_openssl_engine

# Plain openssl without the engine, for the CA and the sender's side.
plain_openssl() { OPENSSL_CONF=/dev/null openssl "$@"; }

recipient_certificate() {
    p11_user --keypairgen --key-type rsa:2048 --usage-decrypt --id 05 --label cms-rsa \
        >"$WORK/keygen.log" 2>&1 &&
        p11 --token-label "$TOKEN_LABEL" --read-object --type pubkey --id 05 \
            -o "$WORK/token-pub.der" &&
        plain_openssl pkey -pubin -inform DER -in "$WORK/token-pub.der" -out "$WORK/token-pub.pem" &&
        plain_openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/ca.key" -days 2 \
            -subj "/CN=mesign CMS test CA" -out "$WORK/ca.pem" 2>/dev/null &&
        plain_openssl req -new -key "$WORK/ca.key" -subj "/CN=mesign CMS recipient" \
            -out "$WORK/placeholder.csr" &&
        plain_openssl x509 -req -in "$WORK/placeholder.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
            -CAcreateserial -days 2 -force_pubkey "$WORK/token-pub.pem" \
            -extfile <(printf 'keyUsage=keyEncipherment\nextendedKeyUsage=emailProtection\n') \
            -out "$WORK/recipient.pem"
}
check "RSA-2048 decrypt key generated on the token, certificate issued for it" \
    recipient_certificate

printf 'Subject: contract\n\nConfidential contract text, %s.\n' "$(date +%s%N)" >"$WORK/message.txt"
KEY_URL="pkcs11:token=$TOKEN_LABEL;object=cms-rsa;type=private"

# cms_round NAME [cms -encrypt key options...]
cms_round() {
    local name=$1
    shift
    plain_openssl cms -encrypt -binary -aes256 -in "$WORK/message.txt" -recip "$WORK/recipient.pem" "$@" \
        -outform PEM -out "$WORK/$name.p7m" &&
        plain_openssl cms -cmsout -print -inform PEM -in "$WORK/$name.p7m" >"$WORK/$name.txt" &&
        openssl cms -decrypt -binary -inform PEM -in "$WORK/$name.p7m" -recip "$WORK/recipient.pem" \
            -engine pkcs11 -keyform engine -inkey "$KEY_URL" -out "$WORK/$name.out" &&
        cmp "$WORK/message.txt" "$WORK/$name.out"
}
check "S/MIME, RSA PKCS#1 v1.5 key transport: decrypted through the engine" \
    cms_round pkcs1
check "S/MIME, RSA-OAEP (SHA-1) key transport: decrypted through the engine" \
    cms_round oaep-sha1 -keyopt rsa_padding_mode:oaep
oaep_sha256() {
    cms_round oaep-sha256 -keyopt rsa_padding_mode:oaep -keyopt rsa_oaep_md:sha256 \
        -keyopt rsa_mgf1_md:sha256 &&
        grep -q "sha256" "$WORK/oaep-sha256.txt"
}
check "S/MIME, RSA-OAEP (SHA-256, MGF1-SHA256) key transport: decrypted through the engine" \
    oaep_sha256

# Only meaningful once a message to the token's key did decrypt.
other_recipient_refused() {
    cmp "$WORK/message.txt" "$WORK/pkcs1.out" &&
        plain_openssl cms -encrypt -aes256 -in "$WORK/message.txt" -recip "$WORK/ca.pem" \
        -outform PEM -out "$WORK/other.p7m" &&
        ! openssl cms -decrypt -inform PEM -in "$WORK/other.p7m" -recip "$WORK/recipient.pem" \
            -engine pkcs11 -keyform engine -inkey "$KEY_URL" -out "$WORK/other.out" 2>/dev/null
}
check "a message for another recipient does not decrypt" other_recipient_refused

summary
