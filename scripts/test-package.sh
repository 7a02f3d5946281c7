#!/usr/bin/env bash
# The .deb as a user gets it: built by `make deb` from the release binary, unpacked into a clean directory
# (dpkg -x, no system change), its binary run from there: --version, --config.check on the packaged config,
# and /metrics served from a throwaway PostgreSQL target. Also checks what the package declares: Depends on
# Debian's libraries only (the Swift runtime is linked in), conffiles, a unit that systemd-analyze verifies.
# Prints one line per check; exits non-zero if any failed. Run by `make test` after the Swift tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DEB_DIR=${DEB_DIR:-.build/deb}

failures=0
check() { # check DESCRIPTION COMMAND...: runs the command, prints ok/FAILED with the description
    local description=$1
    shift
    if "$@" >/dev/null 2>&1; then
        echo "test-package: ok: $description"
    else
        echo "test-package: FAILED: $description" >&2
        failures=$((failures + 1))
    fi
}

deb=$(ls -t "$DEB_DIR"/pgconn-exporter_*.deb 2>/dev/null | head -n 1)
[[ -n $deb ]] || { echo "test-package: no .deb in $DEB_DIR (run: make deb)" >&2; exit 1; }
root=$(mktemp -d "${TMPDIR:-/tmp}/pgconn-deb.XXXXXX")
exporter_pid=
cleanup() {
    if [[ -n $exporter_pid ]]; then kill "$exporter_pid" 2>/dev/null || true; wait "$exporter_pid" 2>/dev/null || true; fi
    rm -rf "$root"
}
trap cleanup EXIT
dpkg -x "$deb" "$root"
bin=$root/usr/bin/pgconn_exporter
info=$(dpkg-deb --field "$deb" Depends)
version=$(dpkg-deb --field "$deb" Version)

check "the binary runs --version ($version)" test "$("$bin" --version)" = "$version"
check "no Swift runtime library needed (ldd)" bash -c "! ldd '$bin' | grep -q libswift"
check "every library it needs is found (ldd)" bash -c "! ldd '$bin' | grep -q 'not found'"
for library in libpq5 libmicrohttpd12 libgnutls30 libcrypt1 zlib1g; do
    check "Depends names $library" grep -q "$library" <<<"$info"
done
check "conffiles list the configs" bash -c "dpkg-deb --ctrl-tarfile '$deb' | tar -xO ./conffiles | grep -qx /etc/pgconn_exporter/pgconn_exporter.yml"
check "the packaged config is valid" "$bin" --config.check --config.file="$root/etc/pgconn_exporter/pgconn_exporter.yml" \
    --web.config.file="$root/etc/pgconn_exporter/web.yml"
unit=$root/usr/lib/systemd/system/pgconn_exporter.service
check "the unit runs /usr/bin/pgconn_exporter" grep -q '^ExecStart=/usr/bin/pgconn_exporter ' "$unit"
if command -v systemd-analyze >/dev/null; then
    sed "s|/usr/bin/pgconn_exporter|$bin|" "$unit" >"$root/pgconn_exporter.service"
    check "systemd-analyze verify accepts the packaged unit" systemd-analyze verify "$root/pgconn_exporter.service"
fi

# Served from the unpacked directory: a throwaway PostgreSQL as the target.
source scripts/lib-postgres.sh
say() { echo "test-package: $*"; }
die() { echo "test-package: $*" >&2; exit 1; }
pg_find_bin
pg_run_as_postgres
pg_make_workdir deb-test
chmod 755 "$WORK"
trap 'pg_shutdown; rm -rf "$WORK"; cleanup' EXIT
pg_initdb
PORT=$(pg_free_port)
pg_start_server
printf 'targets:\n  - name: local\n    dsn: host=%s port=%s dbname=postgres user=postgres sslmode=disable\n' \
    "$SOCKET_DIR" "$PORT" >"$root/config.yml"
http_port=$(pg_free_port)
"$bin" --config.file="$root/config.yml" --web.listen-address="127.0.0.1:$http_port" >"$root/exporter.log" 2>&1 &
exporter_pid=$!
up=
for _ in $(seq 200); do
    if curl -fsS "http://127.0.0.1:$http_port/metrics" 2>/dev/null | grep -q '^pgconn_up{target="local"} 1$'; then
        up=1
        break
    fi
    sleep 0.05
done
check "the unpacked binary serves /metrics with the target up" test -n "$up"

if ((failures > 0)); then
    echo "test-package: $failures check(s) failed; the exporter's log:" >&2
    cat "$root/exporter.log" >&2 || true
    exit 1
fi
echo "test-package: every check passed ($deb)"
