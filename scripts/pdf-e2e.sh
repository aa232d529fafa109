#!/usr/bin/env bash
# The administrator's certificate workflow end to end, ending in PAdES
# signatures on a PDF made with a key on the card:
#
#   mesign-hsm token init -> key generate (EC P-256 and RSA-3072) -> csr
#   (document signing) -> a throwaway OpenSSL CA issues the certificate
#   (KU digitalSignature + nonRepudiation, EKU from the request) -> cert
#   import -> pyHanko signs a PDF through libmesign_pkcs11.so -> pyHanko's
#   validator and poppler's pdfsig both judge the signature valid and
#   trusted -> one byte changed inside the signed range, and both detect it.
#
# Usage: scripts/pdf-e2e.sh [PROFILE_DIR]   (default target/release)
#   MESIGN_E2E_KEEP=1 keeps the work directory (PDFs, certificates, log).
#   PROFILE_DIR holds mesign-hsmd, mesign-card-emu, mesign-hsm and
#   libmesign_pkcs11.so.
# Needs openssl, poppler-utils (pdfsig), libnss3-tools (certutil) and
# python3-venv; pyHanko is installed into target/py-venv when missing (that
# venv is shared with other tests: packages are only ever added to it).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROFILE_DIR=$(cd "${1:-$ROOT/target/release}" && pwd)
VENV=${MESIGN_E2E_VENV:-$ROOT/target/py-venv}
READY_SECONDS=20
STOP_SECONDS=20
TOKEN_LABEL=pdf-e2e

WORK=$(mktemp -d -t mesign-pdf-e2e.XXXXXX)
LOG=$WORK/hsmd.log
DAEMON_PID=
# shellcheck source=lib/steps.sh
source "$(dirname "$0")/lib/steps.sh"

cleanup() {
    end_daemon "$DAEMON_PID" "$STOP_SECONDS"
    if [ "$FAILED" -ne 0 ] && [ -s "$LOG" ]; then
        echo "--- daemon log ($LOG) ---"
        tail -n 30 "$LOG" || true
    fi
    if [ -n "${MESIGN_E2E_KEEP:-}" ]; then
        echo "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT


# check_output NAME PATTERN CMD...: CMD's output must match the extended
# regular expression PATTERN (whatever its exit status).
check_output() {
    local name=$1 pattern=$2
    shift 2
    "$@" >"$WORK/step.log" 2>&1 || true
    if grep -Eq "$pattern" "$WORK/step.log"; then
        pass "$name"
    else
        fail "$name (no match for /$pattern/)"
        sed 's/^/    | /' "$WORK/step.log" | tail -n 25
    fi
}

# check_rejects NAME PATTERN CMD...: CMD must fail and say PATTERN.
check_rejects() {
    local name=$1 pattern=$2
    shift 2
    if "$@" >"$WORK/step.log" 2>&1; then
        fail "$name (unexpectedly succeeded)"
        sed 's/^/    | /' "$WORK/step.log" | tail -n 25
    elif grep -Eq "$pattern" "$WORK/step.log"; then
        pass "$name"
    else
        fail "$name (failed without /$pattern/)"
        sed 's/^/    | /' "$WORK/step.log" | tail -n 25
    fi
}

for f in mesign-hsmd mesign-card-emu mesign-hsm libmesign_pkcs11.so; do
    if [ ! -e "$PROFILE_DIR/$f" ]; then
        echo "FAIL: $PROFILE_DIR/$f is missing: run \`cargo build --workspace\` first"
        exit 1
    fi
done
for tool in openssl pdfsig certutil; do
    if ! command -v "$tool" >/dev/null; then
        echo "FAIL: $tool is missing (Debian packages openssl, poppler-utils, libnss3-tools)"
        exit 1
    fi
done

# pyHanko in the shared venv; a lock keeps concurrent test runs from
# installing at the same time.
mkdir -p "$(dirname "$VENV")"
(
    flock 9
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    if [ ! -x "$VENV/bin/pyhanko" ]; then
        "$VENV/bin/pip" install -q 'pyhanko[pkcs11]' pyhanko-cli python-pkcs11
    fi
) 9>"$VENV.lock"
PYHANKO=$VENV/bin/pyhanko

export MESIGN_HSM_SOCKET=$WORK/hsmd.sock
export MESIGN_HSM_SO_PIN=so-pin-8731
export MESIGN_HSM_PIN=user-pin-2213
export PYHANKO_PKCS11_PIN=$MESIGN_HSM_PIN
CLI=$PROFILE_DIR/mesign-hsm
MODULE=$PROFILE_DIR/libmesign_pkcs11.so

"$PROFILE_DIR/mesign-hsmd" --state-dir "$WORK/state" --socket "$MESIGN_HSM_SOCKET" >>"$LOG" 2>&1 &
DAEMON_PID=$!
deadline=$((SECONDS + READY_SECONDS))
until [ -S "$MESIGN_HSM_SOCKET" ] && "$CLI" status >/dev/null 2>&1; do
    if ! kill -0 "$DAEMON_PID" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
        echo "FAIL: mesign-hsmd did not become ready"
        FAILED=1
        exit 1
    fi
    sleep 0.1
done

check "token init" "$CLI" token init --label "$TOKEN_LABEL"

# The throwaway CA: a P-384 root valid for two days.
cd "$WORK"
check "CA certificate" openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes \
    -keyout ca.key -out ca.pem -days 2 -subj "/C=DE/O=MeSign Test/CN=MeSign Test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
cat >leaf.ext <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, nonRepudiation
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
certutil -N -d "sql:$WORK/nss" --empty-password >/dev/null 2>&1 || mkdir -p "$WORK/nss"
[ -f "$WORK/nss/cert9.db" ] || certutil -N -d "sql:$WORK/nss" --empty-password
# Trusted for TLS, e-mail and object signing: pdfsig asks NSS for the
# e-mail signer usage.
check "CA in an NSS database for pdfsig" certutil -A -d "sql:$WORK/nss" -n "MeSign Test CA" -t C,C,C -i ca.pem

# A one-page PDF with an uncompressed content stream, written with correct
# xref offsets.
"$VENV/bin/python" - <<'EOF'
objects = [
    b"<< /Type /Catalog /Pages 2 0 R >>",
    b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
    b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
    b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
]
text = b"BT /F1 18 Tf 72 760 Td (Contract 2024-17: payment of 1000 EUR) Tj ET"
objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(text), text))
out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
offsets = []
for i, body in enumerate(objects, start=1):
    offsets.append(len(out))
    out += b"%d 0 obj\n%s\nendobj\n" % (i, body)
xref = len(out)
out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
for off in offsets:
    out += b"%010d 00000 n \n" % off
out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
open("contract.pdf", "wb").write(out)
EOF

sign_and_validate() {
    local type=$1 label=$2 subject=$3
    check "$type: key generate" "$CLI" key generate --type "$type" --label "$label"
    # poppler's pdfsig verifies the signer with NSS for the e-mail signer
    # usage, which an EKU of documentSigning alone does not satisfy; the
    # request asks for both (pyHanko accepts either).
    check "$type: csr (document signing)" "$CLI" csr --key "$label" --subject "$subject" \
        --eku document-signing --eku email-protection --out "$label.csr"
    check "$type: the request verifies with openssl" openssl req -in "$label.csr" -verify -noout
    check "$type: the CA issues the certificate" openssl x509 -req -in "$label.csr" \
        -CA ca.pem -CAkey ca.key -set_serial "0x$(openssl rand -hex 8)" -days 1 \
        -extfile leaf.ext -copy_extensions copy -out "$label.pem"
    check_output "$type: certificate has KU digitalSignature + nonRepudiation" \
        'Digital Signature, Non Repudiation' openssl x509 -in "$label.pem" -noout -ext keyUsage
    check_output "$type: certificate has the document-signing EKU from the request" \
        '1\.3\.6\.1\.5\.5\.7\.3\.36' openssl x509 -in "$label.pem" -noout -ext extendedKeyUsage
    check "$type: cert import with the chain" "$CLI" cert import --key "$label" "$label.pem" --chain ca.pem
    "$CLI" export-public --key "$label" --out "$label.pub.pem" >/dev/null 2>&1 || true
    openssl x509 -in "$label.pem" -noout -pubkey >"$label.cert-pub.pem" 2>/dev/null || true
    check "$type: export-public equals the certificate's key" cmp "$label.pub.pem" "$label.cert-pub.pem"

    check "$type: pyHanko signs through libmesign_pkcs11.so" "$PYHANKO" sign addsig \
        --field "Sig-$label" --use-pades --reason "e2e test" \
        pkcs11 --lib "$MODULE" --token-label "$TOKEN_LABEL" --cert-label "$label" --key-label "$label" \
        contract.pdf "$label.signed.pdf"
    check_output "$type: pyHanko judges the signature intact and trusted" \
        ':VALID$' "$PYHANKO" sign validate --trust ca.pem --trust-replace --no-revocation-check \
        --executive-summary "$label.signed.pdf"
    "$PYHANKO" sign validate --trust ca.pem --trust-replace --no-revocation-check \
        --pretty-print "$label.signed.pdf" >"$label.report.txt" 2>&1 || true
    check_output "$type: pyHanko: the signer's certificate is trusted" \
        "The signer's certificate is trusted\." cat "$label.report.txt"
    check_output "$type: pyHanko: the signature is intact" \
        'The signature is cryptographically sound\.' cat "$label.report.txt"
    check_output "$type: pyHanko: the signature covers the whole file" \
        'The signature covers the entire file\.' cat "$label.report.txt"
    check_output "$type: pdfsig: signature valid" 'Signature Validation: Signature is Valid' \
        pdfsig -nssdir "sql:$WORK/nss" "$label.signed.pdf"
    check_output "$type: pdfsig: certificate trusted" 'Certificate Validation: Certificate is Trusted' \
        pdfsig -nssdir "sql:$WORK/nss" "$label.signed.pdf"

    # "1000 EUR" becomes "9000 EUR": one byte inside the signed byte range.
    "$VENV/bin/python" - "$label.signed.pdf" "$label.tampered.pdf" <<'EOF'
import sys
data = bytearray(open(sys.argv[1], "rb").read())
at = data.index(b"payment of 1000 EUR") + len(b"payment of ")
data[at] = ord("9")
open(sys.argv[2], "wb").write(data)
EOF
    check_rejects "$type: pyHanko detects the changed byte" ':INVALID$' \
        "$PYHANKO" sign validate --trust ca.pem --trust-replace --no-revocation-check \
        --executive-summary "$label.tampered.pdf"
    check_output "$type: pyHanko: the changed file's signature is unsound" \
        'The signature is cryptographically unsound\.' "$PYHANKO" sign validate --trust ca.pem \
        --trust-replace --no-revocation-check --pretty-print "$label.tampered.pdf"
    check_output "$type: pdfsig detects the changed byte" 'Signature Validation: (Digest Mismatch|Signature is Invalid)' \
        pdfsig -nssdir "sql:$WORK/nss" "$label.tampered.pdf"
}

sign_and_validate ec-p256 signer-ec "CN=EC Signer,O=MeSign Test,C=DE"
sign_and_validate rsa-3072 signer-rsa "CN=RSA Signer,O=MeSign Test,C=DE"

echo "SUMMARY: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
