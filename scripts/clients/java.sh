#!/usr/bin/env bash
# Java 17 SunPKCS11 against the module: key pairs generated on the token get
# self-signed certificates (made by OpenSSL's libp11 engine, signing on the
# token) written next to them, then java/Pkcs11Check.java, compiled at test
# time, lists the KeyStore and makes SHA256withECDSA, SHA256withRSA and
# RSASSA-PSS signatures with SunPKCS11 that the JDK verifies.
#
# Usage: scripts/clients/java.sh [PROFILE_DIR]; see common.sh.
source "$(dirname "$0")/common.sh"
need java javac openssl pkcs11-tool
HERE=$(cd "$(dirname "$0")" && pwd)
start_token
use_openssl_engine

# with_certificate TYPE ID LABEL: key pair plus a self-signed certificate
# with the same CKA_ID and label, as Java's KeyStore wants.
with_certificate() {
    keypair "$1" "$2" "$3" &&
        openssl req -new -x509 -days 2 -engine pkcs11 \
            -keyform engine -key "pkcs11:token=$TOKEN_LABEL;object=$3;type=private" \
            -subj "/CN=$3" -sha256 -outform DER -out "$WORK/$3.der" &&
        p11_user --write-object "$WORK/$3.der" --type cert --id "$2" --label "$3" >/dev/null
}
check "EC P-256 key and certificate on the token" with_certificate EC:prime256v1 01 java-ec
check "RSA-2048 key and certificate on the token" with_certificate rsa:2048 02 java-rsa

printf 'name = UnderTest\nlibrary = %s\nslot = %s\n' "$MODULE" "$(token_slot)" >"$WORK/sunpkcs11.cfg"
mkdir -p "$WORK/classes"
check "javac compiles Pkcs11Check.java" javac -d "$WORK/classes" "$HERE/java/Pkcs11Check.java"

java_checks() {
    java -cp "$WORK/classes" Pkcs11Check "$WORK/sunpkcs11.cfg" "$USER_PIN" java-ec java-rsa
}
if java_checks >"$WORK/java.log" 2>&1; then
    pass "Java SunPKCS11 checks"
else
    fail "Java SunPKCS11 checks"
fi
sed -n 's/^\(PASS\|FAIL\): /  java &/p' "$WORK/java.log"
sed -n '/^\(PASS\|FAIL\): /!s/^/    | /p' "$WORK/java.log" | tail -n 25

summary
