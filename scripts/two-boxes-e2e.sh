#!/usr/bin/env bash
# The README's two-box walkthrough, end to end, as a newcomer would type it
# (two daemons on one machine stand for two boxes):
#
#   token init on A and B -> domain create on A, join on B (2 of 2 custodian
#   shares) -> `domain tls-cert` for both boxes and for the signing server ->
#   both daemons restarted with [tls] and [replication] -> a key generated on
#   A appears on B -> pkcs11-tool signs through libmesign_pkcs11.so
#   configured with both boxes (A on its socket, B over mutual TLS), OpenSSL
#   verifies against A's public key -> A is killed -> pkcs11-tool keeps
#   signing (on B), and OpenSSL verifies again.
#
# Usage: scripts/two-boxes-e2e.sh [PROFILE_DIR]   (default target/release)
#   MESIGN_E2E_KEEP=1 keeps the work directory.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROFILE_DIR=$(cd "${1:-$ROOT/target/release}" && pwd)
READY_SECONDS=30
STOP_SECONDS=20
SIGNATURES=5

WORK=$(mktemp -d -t mesign-two-boxes.XXXXXX)
PID_A=
PID_B=
# shellcheck source=lib/steps.sh
source "$(dirname "$0")/lib/steps.sh"

cleanup() {
    end_daemon "$PID_A" "$STOP_SECONDS"
    end_daemon "$PID_B" "$STOP_SECONDS"
    if [ "$FAILED" -ne 0 ]; then
        for box in a b; do
            [ -s "$WORK/$box.log" ] || continue
            echo "--- box $box log ---"
            tail -n 20 "$WORK/$box.log" || true
        done
    fi
    if [ -n "${MESIGN_E2E_KEEP:-}" ]; then
        echo "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

summary() {
    echo "SUMMARY: $PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ] || exit 1
}

for f in mesign-hsmd mesign-card-emu mesign-hsm libmesign_pkcs11.so; do
    if [ ! -e "$PROFILE_DIR/$f" ]; then
        echo "FAIL: $PROFILE_DIR/$f is missing: run \`cargo build --workspace\` first"
        exit 1
    fi
done
for tool in pkcs11-tool openssl python3; do
    command -v "$tool" >/dev/null || { echo "FAIL: $tool is not installed"; exit 1; }
done

MODULE=$PROFILE_DIR/libmesign_pkcs11.so
export MESIGN_HSM_SO_PIN=so-pin-5521
export MESIGN_HSM_PIN=user-pin-7310
unset MESIGN_HSM_SOCKET MESIGN_HSM_DAEMONS
hsm() { "$PROFILE_DIR/mesign-hsm" "$@"; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT_A=$(free_port)
PORT_B=$(free_port)

# start_box NAME [CONFIG]: starts the daemon of box NAME and waits until its
# socket answers (and its TLS port accepts, when CONFIG has one).
start_box() {
    local name=$1 dir=$WORK/$1 args=() pid port=
    mkdir -p "$dir"
    if [ -n "${2:-}" ]; then
        args=(--config "$2")
        port=$(sed -n 's/^listen = "127.0.0.1:\([0-9]*\)"/\1/p' "$2")
    fi
    "$PROFILE_DIR/mesign-hsmd" --state-dir "$dir/state" --socket "$dir/hsmd.sock" "${args[@]}" \
        >>"$WORK/$name.log" 2>&1 &
    pid=$!
    if [ "$name" = a ]; then PID_A=$pid; else PID_B=$pid; fi
    local deadline=$((SECONDS + READY_SECONDS))
    until hsm --socket "$dir/hsmd.sock" status >/dev/null 2>&1 &&
        { [ -z "$port" ] || (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }; do
        if ! kill -0 "$pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
            fail "box $name did not become ready"
            summary
        fi
        sleep 0.05
    done
    pass "box $name ready"
}

stop_box() { # NAME: SIGTERM, as systemctl stop would
    if [ "$1" = a ]; then end_daemon "$PID_A" "$STOP_SECONDS"; PID_A=; else end_daemon "$PID_B" "$STOP_SECONDS"; PID_B=; fi
}

A="--socket $WORK/a/hsmd.sock"
B="--socket $WORK/b/hsmd.sock"

# 1. Two boxes with a token each, in one cloning domain.
start_box a
start_box b
# shellcheck disable=SC2086
check "token initialised on A" hsm $A token init --label signing
# shellcheck disable=SC2086
check "token initialised on B" hsm $B token init --label signing
echo "first custodian's passphrase" >"$WORK/custodian-1"
echo "second custodian's passphrase" >"$WORK/custodian-2"
# shellcheck disable=SC2086
check "domain created on A (2 of 2 shares)" hsm $A domain create --shares 2 --threshold 2 \
    --out-dir "$WORK/shares" --passphrase-file "$WORK/custodian-1" --passphrase-file "$WORK/custodian-2"
# shellcheck disable=SC2086
check "B joined the domain" hsm $B domain join "$WORK"/shares/domain-*-share-1-of-2.txt \
    "$WORK"/shares/domain-*-share-2-of-2.txt \
    --passphrase-file "$WORK/custodian-1" --passphrase-file "$WORK/custodian-2"
# shellcheck disable=SC2086
domain_a=$(hsm $A domain show)
# shellcheck disable=SC2086
domain_b=$(hsm $B domain show)
if [ "$domain_a" = "$domain_b" ] && [ -n "$domain_a" ]; then
    pass "A and B show the same domain ($domain_a)"
else
    fail "domains differ: A '$domain_a', B '$domain_b'"
fi

# 2. TLS certificates from the domain CA, then both boxes restarted with
# their [tls] and [replication] sections.
# shellcheck disable=SC2086
check "box certificate for A" hsm $A domain tls-cert --name box-a --ip 127.0.0.1 --out-dir "$WORK/a/certs"
# shellcheck disable=SC2086
check "box certificate for B" hsm $B domain tls-cert --name box-b --ip 127.0.0.1 --out-dir "$WORK/b/certs"
# shellcheck disable=SC2086
check "client certificate for the signing server" \
    hsm $A domain tls-cert --name signer --client --out-dir "$WORK/signer"
box_config() { # NAME PORT PEER_PORT
    cat <<EOF
[tls]
listen = "127.0.0.1:$2"
cert = "$WORK/$1/certs/box-$1.crt"
key = "$WORK/$1/certs/box-$1.key"
ca = "$WORK/$1/certs/domain-ca.crt"

[replication]
peers = ["127.0.0.1:$3"]
mode = "async"
EOF
}
box_config a "$PORT_A" "$PORT_B" >"$WORK/a.toml"
box_config b "$PORT_B" "$PORT_A" >"$WORK/b.toml"
stop_box a
stop_box b
start_box a "$WORK/a.toml"
start_box b "$WORK/b.toml"

# 3. A key generated on A appears on B.
# shellcheck disable=SC2086
check "signing key generated on A" hsm $A key generate --type ec-p256 --label signer --id 01
# shellcheck disable=SC2086
check "its public key exported from A" hsm $A export-public --key signer --out "$WORK/signer.pub.pem"
on_b() {
    # shellcheck disable=SC2086
    hsm $B list --login 2>/dev/null | grep -q signer
}
deadline=$((SECONDS + 10))
until on_b || [ "$SECONDS" -ge "$deadline" ]; do sleep 0.1; done
if on_b; then pass "the key replicated to B"; else fail "the key never reached B"; fi

# 4. The signing server's module knows both boxes: A on its socket, B over TLS.
cat >"$WORK/pkcs11.conf" <<EOF
daemons = ["unix:$WORK/a/hsmd.sock", "tls:127.0.0.1:$PORT_B"]
tls_cert = "$WORK/signer/signer.crt"
tls_key = "$WORK/signer/signer.key"
tls_ca = "$WORK/signer/domain-ca.crt"
EOF
export MESIGN_HSM_CONF=$WORK/pkcs11.conf

# sign_and_verify TAG: SIGNATURES signatures through pkcs11-tool, each a
# fresh process, each verified by OpenSSL with A's public key.
sign_and_verify() {
    local i
    for i in $(seq "$SIGNATURES"); do
        printf 'contract %s %s\n' "$1" "$i" >"$WORK/doc"
        pkcs11-tool --module "$MODULE" --token-label signing --login --pin "$MESIGN_HSM_PIN" \
            --sign --mechanism ECDSA-SHA256 --id 01 --signature-format openssl \
            -i "$WORK/doc" -o "$WORK/doc.sig" || return 1
        openssl dgst -sha256 -verify "$WORK/signer.pub.pem" -signature "$WORK/doc.sig" "$WORK/doc" || return 1
    done
}
check "$SIGNATURES signatures through the module with both boxes up verify" sign_and_verify both-up

# 5. Box A dies; the signing server keeps signing on B.
kill -KILL "$PID_A"
wait "$PID_A" 2>/dev/null || true
PID_A=
check "$SIGNATURES signatures after box A was killed verify" sign_and_verify a-killed
# shellcheck disable=SC2086
audit_b=$(hsm $B audit show)
if grep -q replication_applied <<<"$audit_b"; then
    pass "B's audit log records the replicated key"
else
    fail "B's audit log has no replication_applied record"
fi

summary
