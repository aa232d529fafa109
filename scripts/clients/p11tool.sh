#!/usr/bin/env bash
# GnuTLS p11tool against the module (--provider): list tokens and objects,
# generate ECDSA and RSA keys on the token, and `--test-sign`, which signs
# with the token and verifies with GnuTLS for each key. Also p11-kit:
# `p11-kit server` loads the module, p11tool lists and signs through
# p11-kit's client module, and the server finalizes the module at exit.
#
# Usage: scripts/clients/p11tool.sh [PROFILE_DIR]; see common.sh.
source "$(dirname "$0")/common.sh"
need p11tool p11-kit pkcs11-tool

start_token
export GNUTLS_PIN=$USER_PIN GNUTLS_SO_PIN=$SO_PIN
TOKEN_URL="pkcs11:token=$TOKEN_LABEL"
p11t() { p11tool --provider "$MODULE" "$@"; }

list_tokens() {
    local out
    out=$(p11t --list-tokens)
    echo "$out"
    grep -q "Label: $TOKEN_LABEL" <<<"$out" && grep -q "Flags:.*RNG" <<<"$out"
}
check "p11tool --list-tokens shows the token" list_tokens

check "p11tool generates an ECDSA P-256 key" \
    p11t --login --generate-privkey=ecdsa --curve=secp256r1 --label gnutls-ec "$TOKEN_URL"
check "p11tool generates an RSA-2048 key" \
    p11t --login --generate-privkey=rsa --bits=2048 --label gnutls-rsa "$TOKEN_URL"

list_keys() {
    local out
    out=$(p11t --login --list-all-privkeys "$TOKEN_URL")
    echo "$out"
    grep -q "object=gnutls-ec" <<<"$out" && grep -q "object=gnutls-rsa" <<<"$out"
}
check "p11tool --list-all-privkeys lists both keys" list_keys

list_all() {
    local out
    out=$(p11t --login --list-all "$TOKEN_URL")
    echo "$out"
    [ "$(grep -c "Type: Public key" <<<"$out")" -eq 2 ]
}
check "p11tool --list-all shows both public keys" list_all

test_sign() { # LABEL
    local out
    out=$(p11t --login --test-sign "$TOKEN_URL;object=$1;type=private" 2>&1) ||
        { echo "$out"; return 1; }
    echo "$out"
    # GnuTLS signs through the token, then verifies with the public key.
    grep -q "Verifying against public key in the token... ok" <<<"$out"
}
check "p11tool --test-sign (ECDSA, verified by GnuTLS)" test_sign gnutls-ec
check "p11tool --test-sign (RSA, verified by GnuTLS)" test_sign gnutls-rsa

# p11-kit: `p11-kit server` loads the module and serves the token over
# p11-kit's RPC; GnuTLS reaches it through p11-kit's client module. (A
# module config in ~/.config/pkcs11 would be simpler, but p11-kit ignores
# user configs when running as root, as CI does.)
P11KIT_SOCKET=$WORK/p11-kit.sock
P11KIT_CLIENT=$(find /usr/lib -name p11-kit-client.so -print -quit 2>/dev/null || true)
p11-kit server --foreground --provider "$MODULE" --name "$P11KIT_SOCKET" \
    "pkcs11:token=$TOKEN_LABEL" >"$WORK/p11-kit.log" 2>&1 &
P11KIT_PID=$!
deadline=$((SECONDS + READY_SECONDS))
until [ -S "$P11KIT_SOCKET" ] || [ "$SECONDS" -ge "$deadline" ]; do sleep 0.05; done
through_p11kit() {
    P11_KIT_SERVER_ADDRESS=unix:path=$P11KIT_SOCKET p11tool --provider "$P11KIT_CLIENT" "$@"
}
proxy_lists() {
    local out
    out=$(through_p11kit --login --list-all-privkeys "$TOKEN_URL" 2>&1)
    echo "$out"
    grep -q "object=gnutls-ec" <<<"$out" && grep -q "object=gnutls-rsa" <<<"$out"
}
check "p11-kit server serves the token: keys listed through p11-kit-client" proxy_lists
proxy_signs() {
    local out
    out=$(through_p11kit --login --test-sign "$TOKEN_URL;object=gnutls-ec;type=private" 2>&1) ||
        { echo "$out"; return 1; }
    echo "$out"
    grep -q "Verifying against public key in the token... ok" <<<"$out"
}
check "p11-kit server: --test-sign through p11-kit-client" proxy_signs
p11kit_stops() {
    kill -TERM "$P11KIT_PID"
    local status=0
    wait "$P11KIT_PID" || status=$?
    cat "$WORK/p11-kit.log"
    echo "p11-kit server exit status: $status"
    # p11-kit's signal handler ends its loop, finalizes and unloads the
    # module, and exits with 255; a crash on the way out would show as a
    # signal status (128 + signal number) instead.
    [ "$status" -eq 0 ] || [ "$status" -eq 255 ]
}
check "p11-kit server exits cleanly on SIGTERM (module finalized)" p11kit_stops

summary
