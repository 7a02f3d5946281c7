#!/usr/bin/env bash
# Builds the Debian package pgconn-exporter_<version>_<arch>.deb from a release binary (the Swift runtime linked
# statically, so only Debian's own libraries are needed): the files of scripts/install.sh under /usr and /etc,
# conffiles, maintainer scripts, and Depends computed by dpkg-shlibdeps from the binary's libraries.
#
#   BIN      the binary (default .build/release/pgconn_exporter, built by `make build`)
#   DEB_DIR  where the staging tree and the .deb go (default .build/deb)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=${BIN:-.build/release/pgconn_exporter}
DEB_DIR=${DEB_DIR:-.build/deb}
[[ -x $BIN ]] || { echo "deb: no executable at $BIN (run: make build)" >&2; exit 1; }
for tool in dpkg-deb dpkg-shlibdeps; do
    command -v "$tool" >/dev/null || { echo "deb: $tool is missing (run: make deps)" >&2; exit 1; }
done
if "$BIN" --version >/dev/null 2>&1 && ldd "$BIN" | grep -q 'libswift'; then
    echo "deb: $BIN needs the Swift runtime's shared libraries; build it with --static-swift-stdlib (make build)" >&2
    exit 1
fi

version=$("$BIN" --version)
arch=$(dpkg --print-architecture)
package=pgconn-exporter
stage=$DEB_DIR/stage
rm -rf "$stage"
mkdir -p "$stage/DEBIAN"
DESTDIR=$stage PREFIX=/usr SYSCONFDIR=/etc BIN=$BIN scripts/install.sh >/dev/null
# Debian ships binaries without their symbol tables (82 MB -> 61 MB; most of the rest is Foundation's ICU data).
if command -v strip >/dev/null; then strip --strip-unneeded "$stage/usr/bin/pgconn_exporter"; fi

# dpkg-shlibdeps reads a debian/control and needs the binary inside a tree with a DEBIAN directory.
work=$DEB_DIR/shlibdeps
rm -rf "$work"
mkdir -p "$work/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$package" "$package" >"$work/debian/control"
depends=$(cd "$work" && dpkg-shlibdeps -O -e "$(cd - >/dev/null && realpath "$stage/usr/bin/pgconn_exporter")" 2>/dev/null |
    sed -n 's/^shlibs:Depends=//p')
[[ -n $depends ]] || { echo "deb: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

installed_size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: $package
Version: $version
Architecture: $arch
Maintainer: pgconn_exporter developers <pgconn-exporter@localhost>
Installed-Size: $installed_size
Depends: $depends
Section: database
Priority: optional
Homepage: https://github.com/pgconn-exporter/pgconn_exporter
Description: connection health of PostgreSQL databases for Prometheus
 pgconn_exporter keeps a persistent session to each configured database, probes it, checks that fresh
 logins work, classifies every failure into a small set of reasons, reconnects with backoff and exports
 what it sees on /metrics, /probe and /health. Runs as a hardened systemd service.
CONTROL
printf '%s\n' /etc/pgconn_exporter/pgconn_exporter.yml /etc/pgconn_exporter/web.yml /etc/default/pgconn_exporter \
    >"$stage/DEBIAN/conffiles"
install -m 755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$stage/DEBIAN/"

output=$DEB_DIR/${package}_${version}_${arch}.deb
dpkg-deb --root-owner-group --build "$stage" "$output" >/dev/null
echo "deb: $output ($(du -h "$output" | cut -f1)); Depends: $depends"
