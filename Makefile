# pgconn_exporter: the two commands are `make run` and `make test`; `make help` lists the rest.
#
# Variables: SWIFT (the swift driver), SWIFT_FLAGS (extra flags for swift build/test, e.g.
# `--scratch-path .build-x`), TEST_FILTER (passed to `swift test --filter`), CONFIG (for check-config),
# BENCH_SCALE (0: `make bench` skips the scale benchmark), BENCH_DETECT (0: `make bench` skips bench-detect).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

SWIFT ?= swift
SWIFT_FLAGS ?=
TEST_FILTER ?=
CONFIG ?= config/pgconn_exporter.yml
BENCH_SCALE ?= 1
BENCH_DETECT ?= 1
PREFIX ?= /usr/local
SYSCONFDIR ?=
DESTDIR ?=
BIN ?=
DEB_DIR ?= .build/deb
SOAK_SECONDS ?= 1800
FUZZ_SECONDS ?= 300
SANITIZE_SKIP ?=
EXIT_FUZZ_RUNS ?= 40
# What `make test` adds after the Swift tests (with no TEST_FILTER): fuzzing for TEST_FUZZ_SECONDS per target, and
# the suite under both sanitizers with 20 exits of `make sanitize-exit` (TEST_SANITIZE=0 leaves those out), without
# the soak.
TEST_FUZZ_SECONDS ?= 20
TEST_SANITIZE ?= 1

# libpq-dev, libmicrohttpd-dev: build (libssl-dev: a TLS session's server certificate, libgnutls28-dev: HTTPS,
# libcrypt-dev: bcrypt for basic auth);
# postgresql(-contrib): the servers the tests and `make run` start; prometheus: promtool for `promtool check metrics`; prometheus-postgres-exporter: comparisons; pgbouncer: the
# pooler the tests put in front of PostgreSQL; zlib1g-dev: gzip; curl.
APT_PACKAGES := libpq-dev libssl-dev libmicrohttpd-dev libgnutls28-dev libcrypt-dev postgresql postgresql-contrib prometheus \
	prometheus-postgres-exporter pgbouncer zlib1g-dev curl
# Only for `make test` and `make screenshot`: headless Chromium renders the status page; systemd-analyze checks the
# service unit; dpkg-dev builds the .deb (dpkg-shlibdeps).
APT_TEST_PACKAGES := chromium systemd dpkg-dev
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
RELEASE_BIN := .build/release/pgconn_exporter
TEST_LOG ?= .build/test-output.log

.PHONY: help deps deps-test install-packages build run test check-config install deb soak sanitize sanitize-thread sanitize-exit fuzz bench bench-detect bench-detect-run bench-scale bench-scale-run bench-memory screenshot \
	dashboard-images clean

help: ## List the targets.
	@echo "usage: make <target>"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{ printf "  %-17s %s\n", $$1, $$2 }'

deps: ## Install the missing system packages (apt-get update only when something is missing).
	@$(MAKE) --no-print-directory install-packages PACKAGES='$(APT_PACKAGES)'

deps-test: deps ## deps, and what only the tests need (Chromium).
	@$(MAKE) --no-print-directory install-packages PACKAGES='$(APT_TEST_PACKAGES)'

install-packages:
	@missing=(); \
	for p in $(PACKAGES); do \
		dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$$p"); \
	done; \
	if (( $${#missing[@]} == 0 )); then echo "deps: all installed"; exit 0; fi; \
	echo "deps: installing $${missing[*]}"; \
	$(SUDO) apt-get update; \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y "$${missing[@]}"

# The Swift runtime and Foundation linked in: the binary runs where no Swift is installed, and 10 idle targets
# take 25.7 MiB resident instead of 31.9 (fewer shared-library pages touched; docs/benchmarks.md).
build: ## Build the release binary .build/release/pgconn_exporter (Swift runtime linked statically).
	$(SWIFT) build -c release --product pgconn_exporter --static-swift-stdlib $(SWIFT_FLAGS)

run: deps build ## Start a throwaway PostgreSQL and run the exporter on :9818 (PGCONN_LISTEN overrides).
	PGCONN_BIN="$$($(SWIFT) build -c release --show-bin-path $(SWIFT_FLAGS))/pgconn_exporter" scripts/run-local.sh

test: deps-test ## Every test: the Swift tests (serially), the .deb's, bounded fuzzing, the suite under ASan and TSan.
	@mkdir -p $(dir $(TEST_LOG))
	@bin="$$($(SWIFT) build --show-bin-path $(SWIFT_FLAGS))"; \
	status=0; \
	PGCONN_EXPORTER_BIN="$$bin/pgconn_exporter" \
		$(SWIFT) test --no-parallel $(SWIFT_FLAGS) $(if $(TEST_FILTER),--filter '$(TEST_FILTER)') 2>&1 \
		| tee $(TEST_LOG) || status=$$?; \
	stages=(); digests=(); \
	stage() { local name=$$1; shift; local log=$(dir $(TEST_LOG))test-$$name.log; \
		echo "======== $$name ($$log) ========"; \
		if "$$@" > "$$log" 2>&1; then stages+=("$$name: passed"); else stages+=("$$name: FAILED, see $$log"); \
			tail -n 60 "$$log"; if (( status == 0 )); then status=1; fi; \
			mapfile -t -O "$${#digests[@]}" digests < <(grep -E '^(sanitize [a-z]+: digest:|exit-fuzz: (run|  ))' "$$log" | head -n 8 || true); fi; \
		grep -E '^(test-package: (FAILED|every check)|fuzz [a-z]+ |sanitize [a-z]+: |exit-fuzz: [0-9]+ exits)' "$$log" || true; }; \
	if [ -z '$(TEST_FILTER)' ]; then \
		stage package bash -c '$(MAKE) --no-print-directory deb && scripts/test-package.sh'; \
		stage fuzz env SWIFT='$(SWIFT)' FUZZ_SECONDS='$(TEST_FUZZ_SECONDS)' scripts/fuzz.sh; \
		if [ '$(TEST_SANITIZE)' != 0 ]; then \
			stage asan env SWIFT='$(SWIFT)' SANITIZE_SKIP=SoakTests scripts/sanitize.sh address; \
			stage asan-exit env EXIT_FUZZ_RUNS=20 scripts/exit-fuzz.sh; \
			stage tsan env SWIFT='$(SWIFT)' SANITIZE_SKIP=SoakTests scripts/sanitize.sh thread; \
		fi; \
	fi; \
	echo; echo "======== test summary ($(TEST_LOG)) ========"; \
	grep -E 'recorded an issue|failed after|error: |Test run with' $(TEST_LOG) | grep -v '^◇' | tail -n 40 || true; \
	total=$$(sed -nE 's/.*Test run with ([0-9]+) tests? .*/\1/p' $(TEST_LOG) | tail -n 1); \
	failed=$$(grep -E '^✘ Test .* failed after' $(TEST_LOG) | grep -v '^✘ Test run with' | sort -u | wc -l || true); \
	for line in "$${stages[@]}" "$${digests[@]}"; do echo "$$line"; done; \
	if (( status == 0 )); then echo "make test: PASSED"; else echo "make test: FAILED (exit $$status)"; fi; \
	echo "tests: $$(( $${total:-0} - $${failed:-0} )) passed, $${failed:-0} failed"; \
	exit $$status

check-config: build ## Validate CONFIG (default config/pgconn_exporter.yml, placeholders filled) with the binary.
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	: > "$$tmp/password"; \
	sed -e '/^[[:space:]]*#/!s|@PGPORT@|5432|g' -e "/^[[:space:]]*#/!s|@SOCKET_DIR@|$$tmp|g" \
		-e "/^[[:space:]]*#/!s|@PASSWORD_FILE@|$$tmp/password|g" '$(CONFIG)' > "$$tmp/config.yml"; \
	bin="$$($(SWIFT) build -c release --show-bin-path $(SWIFT_FLAGS))/pgconn_exporter"; \
	"$$bin" --config.check --config.file="$$tmp/config.yml" && echo "check-config: $(CONFIG) is valid"

bench: deps build ## Compare with postgres_exporter (BENCH_TARGETS=10), then bench-detect and bench-scale (BENCH_DETECT=0, BENCH_SCALE=0 skip them).
	@$(MAKE) --no-print-directory install-packages PACKAGES='wrk'
	PGCONN_BIN="$$($(SWIFT) build -c release --show-bin-path $(SWIFT_FLAGS))/pgconn_exporter" scripts/bench.sh
	@if [ '$(BENCH_DETECT)' != 0 ]; then $(MAKE) --no-print-directory bench-detect-run; fi
	@if [ '$(BENCH_SCALE)' != 0 ]; then $(MAKE) --no-print-directory bench-scale-run; fi

bench-detect: deps build ## Faults (terminate, shutdown, outages, black hole) seen by pgconn, postgres_exporter, sql_exporter.
	@$(MAKE) --no-print-directory bench-detect-run

bench-detect-run:
	@$(MAKE) --no-print-directory install-packages PACKAGES='prometheus-sql-exporter'
	PGCONN_BIN="$$($(SWIFT) build -c release --show-bin-path $(SWIFT_FLAGS))/pgconn_exporter" scripts/bench-detect.sh

bench-scale: deps build ## Thousands of targets through PgBouncer (BENCH_SCALE_TARGETS="1000 5000"); docs/benchmarks.md.
	@$(MAKE) --no-print-directory bench-scale-run

bench-scale-run:
	@$(MAKE) --no-print-directory install-packages PACKAGES='pgbouncer wrk'
	PGCONN_BIN="$$($(SWIFT) build -c release --show-bin-path $(SWIFT_FLAGS))/pgconn_exporter" scripts/bench-scale.sh

IMAGES_VENV := .build/venv-images
DASHBOARD_DATA := .build/dashboard-data

dashboard-images: deps ## Render the dashboards' rows into docs/img from an end-to-end run (matplotlib in a venv).
	@$(IMAGES_VENV)/bin/python -c 'import matplotlib' 2>/dev/null || { \
		rm -rf $(IMAGES_VENV) && python3 -m venv $(IMAGES_VENV) && \
		$(IMAGES_VENV)/bin/pip install --quiet 'matplotlib==3.*'; }
	rm -rf $(DASHBOARD_DATA)
	bin="$$($(SWIFT) build --show-bin-path $(SWIFT_FLAGS))"; \
	PGCONN_EXPORTER_BIN="$$bin/pgconn_exporter" PGCONN_DASHBOARD_DATA=$(DASHBOARD_DATA) PGCONN_DASHBOARD_PAUSE=15 \
		$(SWIFT) test $(SWIFT_FLAGS) --filter PrometheusEndToEndTests
	$(IMAGES_VENV)/bin/python dashboards/render_images.py --data $(DASHBOARD_DATA) --out docs/img

bench-memory: deps-test ## Resident memory of full event rings at 1,000 targets (figures for docs/benchmarks.md).
	PGCONN_BENCH=1 $(SWIFT) test $(SWIFT_FLAGS) --filter EventRingMemoryBenchmark 2>&1 | grep -E 'event rings|passed|failed'


screenshot: deps-test build ## Render the status page with 3 targets in headless Chromium into docs/status-page.png.
	PGCONN_BIN="$$($(SWIFT) build -c release --show-bin-path $(SWIFT_FLAGS))/pgconn_exporter" scripts/screenshot.sh

soak: deps-test ## The soak alone for SOAK_SECONDS (default 1800): 50 flapping targets (make test runs it for 120 s).
	@bin="$$($(SWIFT) build --show-bin-path $(SWIFT_FLAGS))"; \
	PGCONN_SOAK_SECONDS='$(SOAK_SECONDS)' PGCONN_EXPORTER_BIN="$$bin/pgconn_exporter" \
		$(SWIFT) test $(SWIFT_FLAGS) --filter SoakTests

sanitize: deps-test ## The whole suite under AddressSanitizer and LeakSanitizer, exporter binary included (.build-asan).
	SWIFT='$(SWIFT)' TEST_FILTER='$(TEST_FILTER)' SANITIZE_SKIP='$(SANITIZE_SKIP)' scripts/sanitize.sh address

sanitize-thread: deps-test ## The whole suite under ThreadSanitizer (.build-tsan; pthread locks in place of Mutex).
	SWIFT='$(SWIFT)' TEST_FILTER='$(TEST_FILTER)' SANITIZE_SKIP='$(SANITIZE_SKIP)' scripts/sanitize.sh thread

sanitize-exit: deps ## SIGTERM the ASan exporter at random moments with work in flight (EXIT_FUZZ_RUNS=40): exit 0, no report.
	$(SWIFT) build --sanitize=address --scratch-path .build-asan --product pgconn_exporter 2>&1 \
		| { grep -v 'Cannot export local symbol' || true; }
	EXIT_FUZZ_RUNS='$(EXIT_FUZZ_RUNS)' scripts/exit-fuzz.sh

fuzz: deps ## libFuzzer on the config loaders, DSNs, HTTP requests, durations, error messages, labels: FUZZ_SECONDS each.
	SWIFT='$(SWIFT)' FUZZ_SECONDS='$(FUZZ_SECONDS)' scripts/fuzz.sh

install: ## Install binary, systemd unit, config and docs (PREFIX=/usr/local, SYSCONFDIR, DESTDIR, BIN).
	@if [ -z '$(BIN)' ]; then $(MAKE) --no-print-directory build; fi
	BIN='$(or $(BIN),$(RELEASE_BIN))' PREFIX='$(PREFIX)' SYSCONFDIR='$(SYSCONFDIR)' DESTDIR='$(DESTDIR)' \
		scripts/install.sh

deb: ## Build the Debian package into .build/deb (DEB_DIR; BIN: a release binary to package instead of building).
	@$(MAKE) --no-print-directory install-packages PACKAGES='dpkg-dev'
	@if [ -z '$(BIN)' ]; then $(MAKE) --no-print-directory build; fi
	BIN='$(or $(BIN),$(RELEASE_BIN))' DEB_DIR='$(DEB_DIR)' scripts/make-deb.sh

clean: ## Remove build products (keeps the downloaded dependencies).
	$(SWIFT) package clean $(SWIFT_FLAGS)
	rm -f $(TEST_LOG)
