#!/usr/bin/env bash
# End-to-end check of libmesign_pkcs11.so through OpenSC's pkcs11-tool and
# OpenSSL: a fresh daemon and token, RSA-2048 and P-256 key generation,
# signatures verified by OpenSSL, a daemon restart (SIGTERM, same state dir)
# and signing again, and private keys that cannot be read out.
#
# Usage: scripts/pkcs11-tool-e2e.sh [PROFILE_DIR]   (default target/release)
#   PROFILE_DIR holds mesign-hsmd, mesign-card-emu and libmesign_pkcs11.so.
# MESIGN_E2E_MODULE=/usr/lib/softhsm/libsofthsm2.so runs the same steps
# against another module without starting a daemon (to check the script
# itself); SOFTHSM2_CONF is then pointed at a temporary token directory.
set -euo pipefail

PROFILE_DIR=$(cd "${1:-target/release}" && pwd)
MODULE=${MESIGN_E2E_MODULE:-$PROFILE_DIR/libmesign_pkcs11.so}
WITH_DAEMON=1
[ -n "${MESIGN_E2E_MODULE:-}" ] && WITH_DAEMON=0
SO_PIN=12345678
USER_PIN=123456
READY_SECONDS=20
STOP_SECONDS=20

WORK=$(mktemp -d -t mesign-e2e.XXXXXX)
STATE_DIR=$WORK/state
SOCKET=$WORK/hsmd.sock
LOG=$WORK/hsmd.log
DAEMON_PID=
# shellcheck source=lib/steps.sh
source "$(dirname "$0")/lib/steps.sh"

cleanup() {
    end_daemon "$DAEMON_PID" "$STOP_SECONDS"
    if [ "$FAILED" -ne 0 ] && [ -s "$LOG" ]; then
        echo "--- daemon log ($LOG) ---"
        tail -n 50 "$LOG" || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT


# check_fails NAME CMD...: CMD must fail.
check_fails() {
    local name=$1
    shift
    if "$@" >"$WORK/step.log" 2>&1; then
        fail "$name (unexpectedly succeeded)"
        sed 's/^/    | /' "$WORK/step.log" | tail -n 20
    else
        pass "$name"
    fi
}

p11() { pkcs11-tool --module "$MODULE" "$@"; }
p11_user() { p11 --login --pin "$USER_PIN" "$@"; }

require() {
    for f in "$@"; do
        if [ ! -e "$f" ]; then
            echo "FAIL: $f is missing: run \`cargo build --release --workspace\` first"
            exit 1
        fi
    done
}

start_daemon() {
    [ "$WITH_DAEMON" -eq 1 ] || return 0
    "$PROFILE_DIR/mesign-hsmd" --state-dir "$STATE_DIR" --socket "$SOCKET" >>"$LOG" 2>&1 &
    DAEMON_PID=$!
    local deadline=$((SECONDS + READY_SECONDS))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
            wait "$DAEMON_PID" || true
            DAEMON_PID=
            echo "mesign-hsmd exited before it was ready"
            return 1
        fi
        if [ -S "$SOCKET" ] && p11 -L >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "mesign-hsmd not ready within ${READY_SECONDS}s"
    return 1
}

stop_daemon() {
    [ "$WITH_DAEMON" -eq 1 ] || return 0
    kill -TERM "$DAEMON_PID"
    local deadline=$((SECONDS + STOP_SECONDS))
    while kill -0 "$DAEMON_PID" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "mesign-hsmd ignored SIGTERM for ${STOP_SECONDS}s"
            return 1
        fi
        sleep 0.1
    done
    local status=0
    wait "$DAEMON_PID" || status=$?
    DAEMON_PID=
    echo "mesign-hsmd exited with status $status"
}

sign_file() { # ID MECHANISM INPUT OUTPUT [extra...]
    local id=$1 mech=$2 in=$3 out=$4
    shift 4
    rm -f "$out"
    p11_user --sign --id "$id" -m "$mech" -i "$in" -o "$out" "$@" && [ -s "$out" ]
}

verify_file() { # PUBKEY_PEM SIGNATURE DATA
    openssl dgst -sha256 -verify "$1" -signature "$2" "$3"
}

tampered_rejected() { # PUBKEY_PEM SIGNATURE DATA
    cp "$3" "$WORK/tampered"
    printf 'x' >>"$WORK/tampered"
    ! openssl dgst -sha256 -verify "$1" -signature "$2" "$WORK/tampered"
}

sign_and_verify_round() { # ROUND
    local r=$1
    check "[$r] sign SHA256-RSA-PKCS" sign_file 01 SHA256-RSA-PKCS "$WORK/doc" "$WORK/rsa-$r.sig"
    check "[$r] OpenSSL verifies the RSA signature" verify_file "$WORK/rsa.pem" "$WORK/rsa-$r.sig" "$WORK/doc"
    check "[$r] OpenSSL rejects the RSA signature on a tampered file" \
        tampered_rejected "$WORK/rsa.pem" "$WORK/rsa-$r.sig" "$WORK/doc"
    if [ "$WITH_DAEMON" -eq 1 ]; then
        check "[$r] sign ECDSA-SHA256" \
            sign_file 02 ECDSA-SHA256 "$WORK/doc" "$WORK/ec-$r.sig" --signature-format openssl
        check "[$r] OpenSSL verifies the ECDSA-SHA256 signature" \
            verify_file "$WORK/ec.pem" "$WORK/ec-$r.sig" "$WORK/doc"
        check "[$r] OpenSSL rejects the ECDSA signature on a tampered file" \
            tampered_rejected "$WORK/ec.pem" "$WORK/ec-$r.sig" "$WORK/doc"
    else
        echo "SKIP: [$r] ECDSA-SHA256 (divergence: SoftHSMv2 2.6.1 has no CKM_ECDSA_SHA256)"
    fi
    check "[$r] sign ECDSA over a SHA-256 hash" \
        sign_file 02 ECDSA "$WORK/doc.sha256" "$WORK/ecraw-$r.sig" --signature-format openssl
    check "[$r] OpenSSL verifies the ECDSA signature" \
        verify_file "$WORK/ec.pem" "$WORK/ecraw-$r.sig" "$WORK/doc"
}

command -v pkcs11-tool >/dev/null || { echo "FAIL: pkcs11-tool (opensc) is not installed"; exit 1; }
command -v openssl >/dev/null || { echo "FAIL: openssl is not installed"; exit 1; }
if [ "$WITH_DAEMON" -eq 1 ]; then
    require "$PROFILE_DIR/mesign-hsmd" "$PROFILE_DIR/mesign-card-emu" "$MODULE"
    export MESIGN_HSM_SOCKET=$SOCKET
else
    require "$MODULE"
    mkdir -p "$WORK/tokens"
    printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
        "$WORK/tokens" >"$WORK/softhsm2.conf"
    export SOFTHSM2_CONF=$WORK/softhsm2.conf
fi

echo "module: $MODULE"
if ! start_daemon; then
    fail "daemon start"
    echo "SUMMARY: $PASSED passed, $FAILED failed"
    exit 1
fi
pass "daemon start (socket $SOCKET)"

head -c 100000 /dev/urandom >"$WORK/doc"
openssl dgst -sha256 -binary "$WORK/doc" >"$WORK/doc.sha256"

check "init token" p11 --init-token --label e2e --so-pin "$SO_PIN"
check "init user PIN" p11 --init-pin --login --login-type so --so-pin "$SO_PIN" --new-pin "$USER_PIN"
check "wrong user PIN is refused" bash -c "! pkcs11-tool --module '$MODULE' --login --pin 999999 --list-objects"
check "generate RSA-2048" p11_user --keypairgen --key-type rsa:2048 --id 01 --label rsa
check "generate EC P-256" p11_user --keypairgen --key-type EC:prime256v1 --id 02 --label ec
check "read RSA public key" p11 --read-object --type pubkey --id 01 -o "$WORK/rsa.der"
check "read EC public key" p11 --read-object --type pubkey --id 02 -o "$WORK/ec.der"
check "OpenSSL parses the RSA public key" \
    openssl pkey -pubin -inform DER -in "$WORK/rsa.der" -out "$WORK/rsa.pem"
check "OpenSSL parses the EC public key" \
    openssl pkey -pubin -inform DER -in "$WORK/ec.der" -out "$WORK/ec.pem"
# pkcs11-tool exits 0 when it declines to read a private key, so the proof
# is that no key bytes come out and that the token reports the keys as
# sensitive and never extractable.
p11_user --read-object --type privkey --id 01 -o "$WORK/rsa-priv.der" >/dev/null 2>&1 || true
p11_user --read-object --type privkey --id 02 -o "$WORK/ec-priv.der" >/dev/null 2>&1 || true
check_fails "reading the private keys yields no key bytes" \
    test -s "$WORK/rsa-priv.der" -o -s "$WORK/ec-priv.der"
private_keys_protected() {
    local listing
    listing=$(p11_user --list-objects --type privkey)
    echo "$listing"
    [ "$(grep -c 'Access:.*sensitive.*never extractable' <<<"$listing")" -eq 2 ]
}
check "both private keys are sensitive and never extractable" private_keys_protected

sign_and_verify_round before-restart

if [ "$WITH_DAEMON" -eq 1 ]; then
    check "daemon stops on SIGTERM" stop_daemon
    if start_daemon; then
        pass "daemon restart on the same state dir"
    else
        fail "daemon restart on the same state dir"
    fi
fi
check "keys still listed" bash -c \
    "pkcs11-tool --module '$MODULE' --login --pin $USER_PIN --list-objects --type privkey | grep -q 'label:.*rsa' && \
     pkcs11-tool --module '$MODULE' --login --pin $USER_PIN --list-objects --type privkey | grep -q 'label:.*ec'"
sign_and_verify_round after-restart

echo "SUMMARY: $PASSED passed, $FAILED failed"
if [ "$FAILED" -ne 0 ]; then
    printf '  failed: %s\n' "${FAILURES[@]}"
    exit 1
fi
