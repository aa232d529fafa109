#!/usr/bin/env bash
# Builds the Debian package target/debian/mesign-hsm_<version>_<arch>.deb
# from the workspace: a release build, the files staged under their Debian
# paths, DEBIAN/ control files, then dpkg-deb. Prints the package's path as
# the last line.
#
#   packaging/build-deb.sh [--no-build]
#
# --no-build packages the release binaries already in target/release.
# MESIGN_DEB_VERSION overrides the version (default: the workspace version;
# the end-to-end test uses it to build an upgrade). Needs dpkg-dev
# (dpkg-shlibdeps, dpkg-architecture). Runs lintian when it is installed and
# LINTIAN=1.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

build=1
for arg in "$@"; do
    case "$arg" in
    --no-build) build=0 ;;
    *)
        echo "usage: $0 [--no-build]" >&2
        exit 2
        ;;
    esac
done

version=${MESIGN_DEB_VERSION:-$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)}
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
unitdir=$(pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || echo /lib/systemd/system)
# Reproducible timestamps: the last commit's, unless the caller set one.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

if [ "$build" = 1 ]; then
    # The shipped crates only: the benchmark and the test suite are not packaged.
    cargo build --release --locked --workspace --exclude mesign-bench --exclude softhsm-tests
fi
release=target/release
for f in mesign-hsmd mesign-hsm mesign-card-emu libmesign_pkcs11.so; do
    [ -f "$release/$f" ] || {
        echo "missing $release/$f (build first or drop --no-build)" >&2
        exit 1
    }
done

out=target/debian
root=$out/mesign-hsm_${version}_$arch
rm -rf "$root"
umask 022
doc=$root/usr/share/doc/mesign-hsm

# Binaries and the module, stripped (the release profile keeps line tables
# for backtraces during development; the package does not need them).
install -D -m 0755 "$release/mesign-hsmd" "$root/usr/bin/mesign-hsmd"
install -D -m 0755 "$release/mesign-hsm" "$root/usr/bin/mesign-hsm"
# Not a user command: started by the daemon, found through the config's exe.
install -D -m 0755 "$release/mesign-card-emu" "$root/usr/libexec/mesign-hsm/mesign-card-emu"
install -D -m 0644 "$release/libmesign_pkcs11.so" "$root/usr/lib/$multiarch/pkcs11/libmesign_pkcs11.so"
strip --strip-unneeded --remove-section=.comment --remove-section=.note \
    "$root/usr/bin/"* "$root/usr/libexec/mesign-hsm/mesign-card-emu" \
    "$root/usr/lib/$multiarch/pkcs11/libmesign_pkcs11.so"

install -D -m 0644 packaging/systemd/mesign-hsmd.service "$root$unitdir/mesign-hsmd.service"
install -D -m 0644 packaging/p11-kit/mesign-hsm.module "$root/usr/share/p11-kit/modules/mesign-hsm.module"
install -D -m 0644 packaging/etc/hsmd.toml "$root/etc/mesign-hsm/hsmd.toml"
install -D -m 0644 packaging/etc/pkcs11.conf "$root/etc/mesign-hsm/pkcs11.conf"

# Man pages: hand-written text around each program's own --help output, so
# the usage they show is the one the binary prints.
roff_escape() { sed -e 's/\\/\\e/g' -e 's/^\([.'"'"']\)/\\\&\1/'; }
for page in mesign-hsmd mesign-hsm; do
    help=$("$release/$page" --help | roff_escape)
    mkdir -p "$root/usr/share/man/man8"
    awk -v help="$help" -v version="$version" '
        { gsub(/@VERSION@/, version) }
        /^@HELP@$/ { print help; next }
        { print }' "packaging/man/$page.8.in" | gzip -9n >"$root/usr/share/man/man8/$page.8.gz"
done

install -D -m 0644 packaging/debian/copyright "$doc/copyright"
install -D -m 0644 README.md "$doc/README.md"
install -D -m 0644 packaging/README.md "$doc/README.packaging.md"
{
    echo "mesign-hsm ($version) unstable; urgency=medium"
    echo
    echo "  * Built from the workspace at commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
    echo
    echo " -- MeSign HSM maintainers <hsm@example.invalid>  $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$doc/changelog.gz"

# Control area.
mkdir -p "$root/DEBIAN"
for script in postinst prerm postrm; do
    install -m 0755 "packaging/debian/$script" "$root/DEBIAN/$script"
done
printf '%s\n' /etc/mesign-hsm/hsmd.toml /etc/mesign-hsm/pkcs11.conf >"$root/DEBIAN/conffiles"

# dpkg-shlibdeps wants a debian/control naming the package, in its cwd.
shlibs=$(mktemp -d)
trap 'rm -rf "$shlibs"' EXIT
mkdir "$shlibs/debian"
printf 'Source: mesign-hsm\n\nPackage: mesign-hsm\nArchitecture: any\n' >"$shlibs/debian/control"
depends=$(cd "$shlibs" && dpkg-shlibdeps -O \
    "-e$repo/$root/usr/bin/mesign-hsmd" "-e$repo/$root/usr/bin/mesign-hsm" \
    "-e$repo/$root/usr/libexec/mesign-hsm/mesign-card-emu" \
    "-e$repo/$root/usr/lib/$multiarch/pkcs11/libmesign_pkcs11.so" 2>/dev/null |
    sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || {
    echo "dpkg-shlibdeps found no dependencies" >&2
    exit 1
}
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@DEPENDS@/$depends/" \
    -e "s/@INSTALLED_SIZE@/$size/" packaging/debian/control.in >"$root/DEBIAN/control"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
    xargs -0 md5sum) >"$root/DEBIAN/md5sums"
find "$root" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +

deb=$out/mesign-hsm_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
if [ "${LINTIAN:-0}" = 1 ] && command -v lintian >/dev/null; then
    lintian --info --display-info "$deb" || true
fi
echo "$deb"
