#!/usr/bin/env bash
# End-to-end test of the Debian package, run by scripts/test-all.sh:
# builds the package, installs it on this machine, starts the daemon the way
# the installed systemd unit would (systemd is not PID 1 in CI: the unit's
# User, Group, UMask, directories, limits, environment, no-new-privileges and
# empty capability set are applied with setpriv and prlimit, read from the
# installed unit file), then signs through the p11-kit-discovered module and
# verifies with openssl. It also upgrades the package and signs again with
# the same key, checks who may connect, removes and purges the package, and
# checks under strace that the daemon and card emulator stay inside the
# unit's SystemCallFilter and MemoryDenyWriteExecute.
#
# Needs root (it installs a package, creates users); refuses to run on a
# machine that already has MeSign HSM state. Prints "N passed, M failed" and
# exits non-zero on any failure. Leaves the machine as it found it.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

if [ "$(id -u)" -ne 0 ]; then
    exec sudo --preserve-env=PATH,CARGO_HOME,RUSTUP_HOME "$0" "$@"
fi
export DEBIAN_FRONTEND=noninteractive

passed=0
failed=0
pass() {
    passed=$((passed + 1))
    echo "PASS: $*"
}
fail() {
    failed=$((failed + 1))
    echo "FAIL: $*"
}
# check NAME COMMAND...: runs COMMAND, counts and returns the result.
check() {
    local name=$1
    shift
    if "$@"; then
        pass "$name"
    else
        fail "$name"
        return 1
    fi
}
summary() { echo "deb-e2e: $passed passed, $failed failed"; }
die() {
    fail "$*"
    exit 1
}

state=/var/lib/mesign-hsm
test_user=mesign-e2e
work=$(mktemp -d /tmp/mesign-deb-e2e.XXXXXX)
chmod 0755 "$work"
daemon_pid=
runner_pid=

# --- Leave the machine as found ---------------------------------------------

if [ -e "$state" ] || dpkg-query -W mesign-hsm >/dev/null 2>&1; then
    echo "deb-e2e: $state or the mesign-hsm package exists already; this test" \
        "installs and purges the package and deletes that state, so it runs only on" \
        "a machine without them" >&2
    exit 1
fi
had_user=$(getent passwd mesign-hsm >/dev/null && echo 1 || echo 0)
had_group=$(getent group mesign-hsm >/dev/null && echo 1 || echo 0)
had_users_group=$(getent group mesign-hsm-users >/dev/null && echo 1 || echo 0)

cleanup() {
    stop_daemon >/dev/null 2>&1
    if dpkg-query -W mesign-hsm >/dev/null 2>&1; then
        apt-get purge -y -qq mesign-hsm >/dev/null 2>&1 || dpkg --purge mesign-hsm >/dev/null 2>&1
    fi
    # Created by this test (checked above), so removing it loses nothing.
    rm -rf "$state" /run/mesign-hsm "$work"
    getent passwd "$test_user" >/dev/null && userdel "$test_user"
    [ "$had_user" = 1 ] || { getent passwd mesign-hsm >/dev/null && userdel mesign-hsm; }
    [ "$had_group" = 1 ] || { getent group mesign-hsm >/dev/null && groupdel mesign-hsm; }
    [ "$had_users_group" = 1 ] || { getent group mesign-hsm-users >/dev/null && groupdel mesign-hsm-users; }
    summary
}
trap cleanup EXIT

# --- The unit, read from the installed file ----------------------------------

unit=
# The last assignment of KEY in the unit's [Service] section.
unit_value() {
    awk -v key="$1" '
        /^\[/ { service = ($0 == "[Service]") }
        service && index($0, key "=") == 1 { value = substr($0, length(key) + 2) }
        END { print value }' "$unit"
}

# Every [Service] directive must be either applied here or enforced only by
# systemd itself (and then checked by systemd-analyze, or under strace);
# a new directive makes this test fail until it is handled.
applied="Type ExecStart User Group UMask StateDirectory StateDirectoryMode RuntimeDirectory
RuntimeDirectoryMode LimitMEMLOCK LimitCORE Environment NoNewPrivileges CapabilityBoundingSet
AmbientCapabilities"
systemd_only="Restart RestartSec TimeoutStopSec ProtectSystem ProtectHome PrivateTmp
PrivateDevices PrivateMounts DevicePolicy PrivateNetwork IPAddressDeny RestrictAddressFamilies PrivateIPC
RemoveIPC ProtectProc ProcSubset ProtectKernelTunables ProtectKernelModules ProtectKernelLogs
ProtectControlGroups ProtectClock ProtectHostname RestrictNamespaces RestrictRealtime
RestrictSUIDSGID LockPersonality MemoryDenyWriteExecute SystemCallArchitectures
SystemCallFilter SystemCallErrorNumber"
unit_is_emulable() {
    local key ok=0
    # shellcheck disable=SC2013 # directive names are single words
    for key in $(awk '/^\[/ { s = ($0 == "[Service]") } s && /^[A-Za-z]+=/ { sub(/=.*/, ""); print }' "$unit" | sort -u); do
        if ! grep -qw "$key" <<<"$applied $systemd_only"; then
            echo "  unit directive $key is neither applied by this test nor known to be systemd-only"
            ok=1
        fi
    done
    [ "$(unit_value Type)" = simple ] || { echo "  Type is not simple"; ok=1; }
    [ "$(unit_value NoNewPrivileges)" = yes ] || { echo "  NoNewPrivileges is not yes"; ok=1; }
    [ -z "$(unit_value CapabilityBoundingSet)" ] || { echo "  CapabilityBoundingSet not empty"; ok=1; }
    [ -z "$(unit_value AmbientCapabilities)" ] || { echo "  AmbientCapabilities not empty"; ok=1; }
    return $ok
}

run=0
# Starts the daemon as the unit would, under strace (-f) to record its
# system calls; returns once the socket answers.
start_daemon() {
    local user group umask memlock core runtime_dir socket envs=() exec_line
    user=$(unit_value User)
    group=$(unit_value Group)
    umask=$(unit_value UMask)
    memlock=$(numfmt --from=iec "$(unit_value LimitMEMLOCK)")
    # Raising a hard limit needs CAP_SYS_RESOURCE, which systemd has and a
    # container may not: then the emulator locks only its current memory.
    local hard
    hard=$(ulimit -H -l)
    if [ "$hard" != unlimited ] && [ $((hard * 1024)) -lt "$memlock" ]; then
        echo "  note: LimitMEMLOCK lowered to this machine's hard limit, $hard KiB"
        memlock=$((hard * 1024))
    fi
    core=$(unit_value LimitCORE)
    runtime_dir=/run/$(unit_value RuntimeDirectory)
    # systemd creates (or re-owns) both directories before ExecStart.
    install -d -m "$(unit_value StateDirectoryMode)" -o "$user" -g "$group" "/var/lib/$(unit_value StateDirectory)"
    install -d -m "$(unit_value RuntimeDirectoryMode)" -o "$user" -g "$group" "$runtime_dir"
    while IFS= read -r line; do envs+=("$line"); done < <(awk '
        /^\[/ { s = ($0 == "[Service]") } s && sub(/^Environment=/, "") { print }' "$unit")
    exec_line=$(unit_value ExecStart)
    read -ra exec_argv <<<"$exec_line"
    run=$((run + 1))
    # shellcheck disable=SC2016 # $1 and $@ belong to the inner shell
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "${envs[@]}" \
        strace -f -qq -o "$work/trace.$run" \
        prlimit "--core=$core:$core" "--memlock=$memlock:$memlock" -- \
        setpriv "--reuid=$user" "--regid=$group" --init-groups --no-new-privs \
        --bounding-set=-all --inh-caps=-all \
        bash -c 'umask "$1"; shift; exec "$@"' umask "$umask" "${exec_argv[@]}" \
        2>"$work/daemon.$run.log" &
    runner_pid=$!
    socket=$(sed -n 's/^socket = "\(.*\)"$/\1/p' /etc/mesign-hsm/pkcs11.conf)
    local deadline=$((SECONDS + 60))
    while [ $SECONDS -lt $deadline ]; do
        if ! kill -0 "$runner_pid" 2>/dev/null; then
            echo "  the daemon exited; its log:"
            sed 's/^/    /' "$work/daemon.$run.log"
            return 1
        fi
        daemon_pid=$(pgrep -P "$runner_pid" | head -n 1)
        if [ -n "$daemon_pid" ] && [ -S "$socket" ] && mesign-hsm status >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "  no answer on $socket within 60 s"
    return 1
}

# SIGTERM, then the daemon's exit status (0 = clean).
stop_daemon() {
    [ -n "$runner_pid" ] || return 0
    local status
    [ -n "$daemon_pid" ] && kill -TERM "$daemon_pid" 2>/dev/null
    wait "$runner_pid"
    status=$?
    runner_pid=
    daemon_pid=
    return $status
}

# --- Steps -------------------------------------------------------------------

echo "== build the package"
deb=$(packaging/build-deb.sh | tail -n 1) || die "packaging/build-deb.sh"
[ -f "$deb" ] || die "no package built"
version=$(dpkg-deb -f "$deb" Version)
pass "package built: $deb"

echo "== install"
apt-get install -y -qq "./$deb" </dev/null >"$work/apt.log" 2>&1 ||
    { cat "$work/apt.log"; die "apt-get install ./$deb"; }
pass "apt-get install ./$deb"
unit=$(dpkg -L mesign-hsm | grep '/systemd/system/mesign-hsmd\.service$')
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
for f in /usr/bin/mesign-hsmd /usr/bin/mesign-hsm /usr/libexec/mesign-hsm/mesign-card-emu \
    "/usr/lib/$multiarch/pkcs11/libmesign_pkcs11.so" /usr/share/p11-kit/modules/mesign-hsm.module \
    /etc/mesign-hsm/hsmd.toml /etc/mesign-hsm/pkcs11.conf /usr/share/man/man8/mesign-hsmd.8.gz \
    /usr/share/man/man8/mesign-hsm.8.gz "$unit"; do
    check "installed $f" test -f "$f"
done
check "conffiles registered" bash -c \
    "[ \$(dpkg-query -W -f='\${Conffiles}' mesign-hsm | grep -c '/etc/mesign-hsm/') -eq 2 ]"
check "user mesign-hsm and group mesign-hsm-users exist" \
    bash -c 'getent passwd mesign-hsm >/dev/null && getent group mesign-hsm-users >/dev/null'
check "state directory $state created private to mesign-hsm" \
    bash -c "[ \"\$(stat -c '%U %a' $state)\" = 'mesign-hsm 700' ]"
check "unit enabled (multi-user.target.wants)" \
    test -L /etc/systemd/system/multi-user.target.wants/mesign-hsmd.service
check "systemd-analyze verify $unit" systemd-analyze verify "$unit"
exposure=$(systemd-analyze security --offline=true "$unit" 2>/dev/null |
    sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
echo "  systemd-analyze security: exposure $exposure"
check "systemd-analyze security: exposure ${exposure:-?} <= 1.0" \
    awk -v e="${exposure:-99}" 'BEGIN { exit !(e <= 1.0) }'
check "every unit directive is applied here or systemd-only" unit_is_emulable

# The daemon refuses a misspelt key, naming it (exit status 2).
sed 's/^max_pin_attempts = /max_pin_atempts = /' /etc/mesign-hsm/hsmd.toml >"$work/bad.toml"
mesign-hsmd --config "$work/bad.toml" >"$work/bad.out" 2>&1
bad_status=$?
check "a misspelt setting stops the daemon with status 2 and its name" \
    bash -c "[ $bad_status -eq 2 ] && grep -q max_pin_atempts '$work/bad.out'"

echo "== start the daemon as the unit would"
start_daemon || die "daemon did not become ready"
pass "daemon ready (socket answers)"
check "socket is mesign-hsm:mesign-hsm-users 660" \
    bash -c "[ \"\$(stat -c '%U:%G %a' /run/mesign-hsm/hsmd.sock)\" = 'mesign-hsm:mesign-hsm-users 660' ]"
check "daemon runs as mesign-hsm without capabilities" bash -c \
    "[ \"\$(ps -o user= -p $daemon_pid)\" = mesign-hsm ] && grep -q '^CapEff:.*0000000000000000' /proc/$daemon_pid/status && grep -q '^NoNewPrivs:.*1' /proc/$daemon_pid/status"

unset MESIGN_HSM_SOCKET MESIGN_HSM_CONF
echo "== p11-kit discovery (no module path given)"
p11-kit list-modules >"$work/modules.txt" 2>&1
check "p11-kit list-modules shows mesign-hsm" grep -q '^mesign-hsm:' "$work/modules.txt"
# Debian 12 ships it in the multiarch directory itself, later releases in
# its pkcs11/ subdirectory: ask the package.
proxy=$(dpkg -L p11-kit-modules | grep '/p11-kit-proxy\.so$' | head -n 1)
P11=(pkcs11-tool --module "$proxy")
"${P11[@]}" -L >"$work/slots.txt" 2>&1
slot=$(awk '/^Slot [0-9]+ \(0x[0-9a-f]+\): MeSign/ { id = $3; gsub(/[():]/, "", id); print id; exit }' \
    "$work/slots.txt")
check "pkcs11-tool -L through p11-kit-proxy.so sees the token" test -n "$slot"
[ -n "$slot" ] || { cat "$work/slots.txt"; die "no MeSign slot through the proxy"; }

echo "== init, keygen, sign through p11-kit-proxy.so, verify with openssl"
tok=(--token-label e2e-box)
printf 'contract text %s\n' "$version" >"$work/doc.txt"
check "init token" "${P11[@]}" --slot "$slot" --init-token --label e2e-box --so-pin 12345678
# GnuTLS lists initialised tokens only (SoftHSM's fresh slot is not listed
# either), so p11tool is asked once the token has a label.
p11tool --list-tokens >"$work/tokens.txt" 2>&1
check "p11tool --list-tokens shows the MeSign token" grep -q 'Manufacturer: MeSign' "$work/tokens.txt" ||
    sed 's/^/    /' "$work/tokens.txt"
check "init user PIN" "${P11[@]}" "${tok[@]}" --login --login-type so --so-pin 12345678 --init-pin --pin 123456
check "generate EC P-256 key pair" "${P11[@]}" "${tok[@]}" --login --pin 123456 \
    --keypairgen --key-type EC:prime256v1 --id 01 --label e2e-key
check "export public key" "${P11[@]}" "${tok[@]}" --read-object --type pubkey --id 01 -o "$work/pub.der"
openssl pkey -pubin -inform DER -in "$work/pub.der" -out "$work/pub.pem" 2>/dev/null
# sign_and_verify TAG: signs doc.txt through the proxy, verifies with openssl,
# and checks that a changed document does not verify.
sign_and_verify() {
    "${P11[@]}" "${tok[@]}" --login --pin 123456 --sign --id 01 -m ECDSA-SHA256 \
        --signature-format openssl -i "$work/doc.txt" -o "$work/$1.sig" >/dev/null 2>&1 || return 1
    openssl dgst -sha256 -verify "$work/pub.pem" -signature "$work/$1.sig" "$work/doc.txt" >/dev/null || return 1
    printf 'x' | cat "$work/doc.txt" - >"$work/doc-changed.txt"
    ! openssl dgst -sha256 -verify "$work/pub.pem" -signature "$work/$1.sig" "$work/doc-changed.txt" >/dev/null 2>&1
}
check "ECDSA-SHA256 signature verifies with openssl (and not over a changed text)" sign_and_verify first
# GnuTLS signs with the key found by its PKCS#11 URL and verifies the
# signature with the public key object.
gnutls_test_sign() {
    p11tool --test-sign --login --set-pin=123456 \
        "pkcs11:token=e2e-box;object=e2e-key;type=private" >"$work/test-sign.txt" 2>&1 ||
        { sed 's/^/    /' "$work/test-sign.txt"; return 1; }
}
check "GnuTLS p11tool --test-sign finds the key by URL, signs and verifies" gnutls_test_sign

echo "== who may connect"
useradd --system --no-create-home --shell /usr/sbin/nologin --gid nogroup "$test_user"
users_gid=$(getent group mesign-hsm-users | cut -d: -f3)
as_test_user() { setpriv --reuid="$test_user" "$@" mesign-hsm status >/dev/null 2>&1; }
refused() { ! "$@"; }
check "a user outside mesign-hsm-users cannot connect" \
    refused as_test_user --regid=nogroup --clear-groups
check "a mesign-hsm-users member (primary group) connects" \
    as_test_user --regid=mesign-hsm-users --clear-groups
check "a mesign-hsm-users member (supplementary group only) connects" \
    as_test_user --regid=nogroup --groups="$users_gid"
# The operator's edit of the conffile (kept across the upgrade below).
sed -i "s/^max_pin_attempts = 10$/max_pin_attempts = 8/" /etc/mesign-hsm/hsmd.toml
check "operator edits /etc/mesign-hsm/hsmd.toml" grep -qx "max_pin_attempts = 8" /etc/mesign-hsm/hsmd.toml
check "daemon stops cleanly on SIGTERM" stop_daemon
check "socket removed on stop" test ! -e /run/mesign-hsm/hsmd.sock
start_daemon || die "daemon did not restart"
check "the edited configuration is accepted" as_test_user --regid=mesign-hsm-users --clear-groups

echo "== upgrade keeps state and configuration"
check "daemon stops cleanly before the upgrade" stop_daemon
state_sums() { (cd "$state" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
state_sums >"$work/state.before"
upgrade=$(MESIGN_DEB_VERSION="$version+e2e1" packaging/build-deb.sh --no-build | tail -n 1)
apt-get install -y -qq "./$upgrade" </dev/null >"$work/apt.log" 2>&1 || cat "$work/apt.log"
check "upgraded to $version+e2e1" bash -c "[ \"\$(dpkg-query -W -f='\${Version}' mesign-hsm)\" = '$version+e2e1' ]"
state_sums >"$work/state.after"
check "state files unchanged by the upgrade" cmp -s "$work/state.before" "$work/state.after"
check "state has a token store and a card" bash -c "grep -q token.redb '$work/state.after' && grep -q card0 '$work/state.after'"
check "operator's conffile edit kept" grep -qx "max_pin_attempts = 8" /etc/mesign-hsm/hsmd.toml
start_daemon || die "daemon did not start after the upgrade"
check "the same key signs after the upgrade (verified with openssl)" sign_and_verify upgraded
check "group member still allowed after the upgrade" as_test_user --regid=mesign-hsm-users --clear-groups
check "daemon stops cleanly" stop_daemon
state_sums >"$work/state.stopped"

echo "== the daemon stays inside SystemCallFilter and MemoryDenyWriteExecute"
allowed_syscalls() {
    # Expands @groups recursively; prints one system call per line.
    local group
    for group in "$@"; do
        systemd-analyze syscall-filter "$group" | awk 'NR > 1 && NF && $1 !~ /^#/ { print $1 }' |
            while read -r name; do
                case "$name" in @*) allowed_syscalls "$name" ;; *) echo "$name" ;; esac
            done
    done
}
denied=$(awk '/^\[/ { s = ($0 == "[Service]") } s && sub(/^SystemCallFilter=~/, "") { print }' "$unit")
filter=$(awk '/^\[/ { s = ($0 == "[Service]") } s && /^SystemCallFilter=[^~]/ { sub(/^SystemCallFilter=/, ""); print }' "$unit")
# shellcheck disable=SC2086 # one group name per word
allowed_syscalls $filter | sort -u >"$work/allow.txt"
# shellcheck disable=SC2086 # one group name per word
allowed_syscalls $denied | sort -u >"$work/deny.txt"
comm -23 "$work/allow.txt" "$work/deny.txt" >"$work/permitted.txt"
exec_path=$(unit_value ExecStart | cut -d' ' -f1)
: >"$work/used.txt"
: >"$work/wx.txt"
for trace in "$work"/trace.*; do
    # Only what runs after the daemon's own execve: setpriv and prlimit do
    # privileged things that systemd does before applying the filter.
    awk -v exe="execve(\"$exec_path\"" 'index($0, exe) { on = 1 } on' "$trace" >"$trace.daemon"
    awk '$2 ~ /^[a-z0-9_]+\(/ { sub(/\(.*/, "", $2); print $2 }' "$trace.daemon" >>"$work/used.txt"
    grep -E ' (mmap|mprotect|pkey_mprotect)\(' "$trace.daemon" |
        grep -E 'mprotect\(.*PROT_EXEC|mmap\(.*(PROT_WRITE\|PROT_EXEC|PROT_EXEC\|PROT_WRITE)' >>"$work/wx.txt" || true
done
sort -u "$work/used.txt" -o "$work/used.txt"
outside=$(comm -23 "$work/used.txt" "$work/permitted.txt" | tr '\n' ' ')
echo "  $(wc -l <"$work/used.txt") distinct system calls used (filter: $filter, minus $denied)"
check "every system call used is allowed by the unit's filter${outside:+ (outside: $outside)}" test -z "$outside"
check "no writable+executable mapping and no mprotect to executable" test ! -s "$work/wx.txt"

echo "== remove keeps state, purge keeps state (documented)"
apt-get remove -y -qq mesign-hsm </dev/null >"$work/apt.log" 2>&1 || cat "$work/apt.log"
check "removed: binaries and p11-kit module file gone" \
    bash -c '[ ! -e /usr/bin/mesign-hsmd ] && [ ! -e /usr/share/p11-kit/modules/mesign-hsm.module ]'
check "removed: p11-kit no longer lists mesign-hsm" bash -c '! p11-kit list-modules 2>/dev/null | grep -q "^mesign-hsm:"'
check "removed: configuration kept" test -f /etc/mesign-hsm/hsmd.toml
state_sums >"$work/state.removed"
check "removed: state unchanged" cmp -s "$work/state.stopped" "$work/state.removed"
apt-get purge -y -qq mesign-hsm </dev/null >"$work/apt.log" 2>&1 || cat "$work/apt.log"
check "purged: package and configuration gone" \
    bash -c '! dpkg-query -W mesign-hsm >/dev/null 2>&1 && [ ! -e /etc/mesign-hsm ]'
check "purged: enable link gone" test ! -e /etc/systemd/system/multi-user.target.wants/mesign-hsmd.service
check "purged: state kept (holds the keys; the admin deletes it)" test -f "$state/slot-0/token.redb"

[ "$failed" -eq 0 ]
