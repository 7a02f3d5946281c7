#!/usr/bin/env bash
# Installs pgconn_exporter: the binary, the systemd unit, a config, the defaults file and the docs.
#
#   PREFIX      /usr/local by default (the .deb uses /usr)
#   SYSCONFDIR  /etc when PREFIX is /usr, else $PREFIX/etc
#   DESTDIR     a staging root, prepended to every path (packaging); empty by default
#   BIN         the binary to install (default: the release build, .build/release/pgconn_exporter)
#
# Files under SYSCONFDIR that exist already are kept (the new version lands beside them as *.dist), so a
# reinstall never overwrites a config someone edited. The unit's paths follow PREFIX and SYSCONFDIR.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PREFIX=${PREFIX:-/usr/local}
if [[ -z ${SYSCONFDIR:-} ]]; then
    if [[ $PREFIX == /usr ]]; then SYSCONFDIR=/etc; else SYSCONFDIR=$PREFIX/etc; fi
fi
DESTDIR=${DESTDIR:-}
BIN=${BIN:-.build/release/pgconn_exporter}
[[ -x $BIN ]] || { echo "install: no executable at $BIN (run: make build)" >&2; exit 1; }

root=$DESTDIR
docdir=$PREFIX/share/doc/pgconn-exporter
confdir=$SYSCONFDIR/pgconn_exporter
unitdir=$PREFIX/lib/systemd/system

install -d "$root$PREFIX/bin" "$root$unitdir" "$root$confdir" "$root$SYSCONFDIR/default" "$root$docdir"
install -m 755 "$BIN" "$root$PREFIX/bin/pgconn_exporter"
sed -e "s|/usr/bin/pgconn_exporter|$PREFIX/bin/pgconn_exporter|g" \
    -e "s|/etc/pgconn_exporter/|$confdir/|g" \
    -e "s|/etc/default/pgconn_exporter|$SYSCONFDIR/default/pgconn_exporter|g" \
    -e "s|/usr/share/doc/pgconn-exporter/|$docdir/|g" \
    config/pgconn_exporter.service >"$root$unitdir/pgconn_exporter.service"
chmod 644 "$root$unitdir/pgconn_exporter.service"

# install_config SOURCE DESTINATION MODE: a config file, kept when it exists (the new one goes to *.dist).
install_config() {
    local target=$root$2
    if [[ -e $target ]]; then
        install -m "$3" "$1" "$target.dist"
        echo "install: kept $2 (the packaged version is $2.dist)"
    else
        install -m "$3" "$1" "$target"
    fi
}
install_config packaging/pgconn_exporter.yml "$confdir/pgconn_exporter.yml" 644
install_config packaging/web.yml "$confdir/web.yml" 644
install_config packaging/default "$SYSCONFDIR/default/pgconn_exporter" 644

install -m 644 README.md config/example.yml "$root$docdir/"
install -m 644 docs/*.md "$root$docdir/"
install -d "$root$docdir/prometheus" "$root$docdir/dashboards"
cp -R config/prometheus/. "$root$docdir/prometheus/"
install -m 644 dashboards/*.json "$root$docdir/dashboards/"
echo "install: pgconn_exporter in $root$PREFIX/bin, unit in $root$unitdir, config in $root$confdir, docs in $root$docdir"
