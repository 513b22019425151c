# The two commands: `make run` (the gateway, admin and metrics with the embedded SQLite default)
# and `make test` (the whole test suite). Both install what a fresh machine lacks first.

SHELL := /bin/bash
VENV := .venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test soak bench-prune prereqs nextest sdk promtool chromium bench-load bench-tune bench-memory bench-compare bench-baseline

## Installs the system tools the build needs: cmake (pingora's zlib-ng is built with it).
prereqs:
	@command -v cmake >/dev/null 2>&1 || { \
		echo "tollgate: installing cmake (needed to build pingora's zlib-ng)"; \
		$(SUDO) apt-get install -y -q cmake >/dev/null 2>&1 || { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q cmake >/dev/null; } \
		|| { echo "tollgate: could not install cmake; install it and retry" >&2; exit 1; }; }
	@command -v cargo >/dev/null 2>&1 || { echo "tollgate: cargo is required (https://rustup.rs)" >&2; exit 1; }

## Google's Python SDK for the end-to-end tests, in a local virtualenv.
sdk: $(VENV)/.installed
$(VENV)/.installed: tests/sdk/requirements.txt
	@echo "tollgate: installing google-genai, schemathesis and Playwright into $(VENV) for the tests"
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -r tests/sdk/requirements.txt
	@touch $@

## Runs Tollgate: gateway on 127.0.0.1:8080, admin on :8081, metrics on :9464, SQLite in data/.
run: prereqs
	cargo run --release --locked -- serve

## promtool (Debian's prometheus package) for `promtool check metrics` in the tests. Outside CI a
## machine without it skips that check (counted in the summary); in CI (CI=true) it is required.
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
		echo "tollgate: installing promtool (Debian's prometheus package) for the metrics tests"; \
		$(SUDO) apt-get install -y -q prometheus >/dev/null 2>&1 \
		|| { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q prometheus >/dev/null 2>&1; } \
		|| { [ "$${CI:-}" != "true" ] && echo "tollgate: promtool unavailable; its check will be skipped"; } \
		|| { echo "tollgate: promtool could not be installed, and CI requires it" >&2; exit 1; }; }

## cargo-nextest: every test in its own process (the memory and tokenizer-loading tests rely on it).
nextest:
	@command -v cargo-nextest >/dev/null 2>&1 || { \
		echo "tollgate: installing cargo-nextest (the test runner)"; \
		cargo install --locked --quiet cargo-nextest; }

## Debian's chromium for the console's browser tests (Playwright drives it; it never downloads one).
chromium:
	@[ -x /usr/bin/chromium ] || { \
		echo "tollgate: installing chromium (Debian's) for the console's browser tests"; \
		$(SUDO) apt-get install -y -q chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q chromium >/dev/null; } \
		|| { echo "tollgate: could not install chromium" >&2; exit 1; }; }

## Runs every test: unit, store conformance (SQLite; PostgreSQL when TOLLGATE_TEST_POSTGRES is
## set), CLI and gateway end-to-end, and Google's own SDK against the gateway. A test whose
## prerequisite is missing fails in CI (CI=true); elsewhere it is skipped and counted below.
test: prereqs nextest sdk promtool chromium
	@rm -f target/skipped-tests.txt
	@TOLLGATE_SKIP_LOG=$(CURDIR)/target/skipped-tests.txt TOLLGATE_TEST_REQUIRE_SDK=1 \
		cargo nextest run --workspace --locked --no-fail-fast; status=$$?; \
	if [ -s target/skipped-tests.txt ]; then \
		echo "tollgate: $$(wc -l < target/skipped-tests.txt) tests skipped: $$(sort target/skipped-tests.txt | uniq -c | sed 's/^ *//' | paste -sd ';' -)"; \
	fi; exit $$status

## The load benchmark: fake upstream direct, nginx, bare pingora, Tollgate (SQLite, PostgreSQL)
## and the peers LiteLLM and Portkey when they install; writes benches/results/.
bench-load: prereqs
	@command -v nginx >/dev/null 2>&1 && command -v wrk >/dev/null 2>&1 || { \
		echo "tollgate: installing nginx-light and wrk for the load benchmark"; \
		$(SUDO) apt-get install -y -q nginx-light wrk >/dev/null; }
	@[ -x .bench/venv/bin/litellm ] || { python3 -m venv .bench/venv && .bench/venv/bin/pip install -q 'litellm[proxy]'; } \
		|| echo "tollgate: LiteLLM did not install; the benchmark will say so"
	@# @hono/node-server after 1.14.1 makes Portkey answer 500 to every proxied request
	@# ("TypeError: immutable", Portkey-AI/gateway#1389): pinned until that is fixed.
	@[ -f .bench/portkey/node_modules/@portkey-ai/gateway/build/start-server.js ] || { mkdir -p .bench/portkey \
		&& cd .bench/portkey && npm init -y >/dev/null \
		&& npm pkg set 'overrides[@hono/node-server]=1.14.1' 'overrides[@hono/node-ws]=1.2.0' \
		&& npm install -q @portkey-ai/gateway >/dev/null; } \
		|| echo "tollgate: Portkey did not install; the benchmark will say so"
	@[ -x .bench/oha/bin/oha ] || cargo install --locked --quiet oha --root .bench/oha \
		|| echo "tollgate: oha did not install; the fixed-rate latency phase will be skipped"
	cargo build --release --locked -p tollgate -p tollgate-bench
	python3 benches/load/run.py $(BENCH_ARGS)

## A bounded soak (10 minutes per database at half of saturation, memory and events sampled each
## minute): benches/results/soak.md. SOAK_ARGS="--minutes 2" for a shorter one.
soak: prereqs
	@command -v wrk >/dev/null 2>&1 || $(SUDO) apt-get install -y -q wrk >/dev/null
	@[ -x .bench/oha/bin/oha ] || cargo install --locked --quiet oha --root .bench/oha
	cargo build --release --locked -p tollgate -p tollgate-bench
	python3 benches/soak/soak.py $(SOAK_ARGS)

## Pruning 10 M events past retention while the gateway serves half of its saturation, the prune
## on and off in turns: benches/results/prune.md. PRUNE_ARGS="--minutes 10" bounds each database.
bench-prune: prereqs
	@command -v wrk >/dev/null 2>&1 || $(SUDO) apt-get install -y -q wrk >/dev/null
	@[ -x .bench/oha/bin/oha ] || cargo install --locked --quiet oha --root .bench/oha
	cargo build --release --locked -p tollgate -p tollgate-bench
	python3 benches/prune/prune.py $(PRUNE_ARGS)

## bare pingora's settings compared (threads, work stealing, keep-alive pool): benches/results/tuning.md.
bench-tune: prereqs
	@command -v wrk >/dev/null 2>&1 && command -v nginx >/dev/null 2>&1 || $(SUDO) apt-get install -y -q nginx-light wrk >/dev/null
	cargo build --release --locked -p tollgate-bench
	python3 benches/load/run.py --tune $(BENCH_ARGS)

## Memory per held stream, each measurement in a fresh process: benches/results/memory.md.
bench-memory: prereqs
	@command -v nginx >/dev/null 2>&1 || $(SUDO) apt-get install -y -q nginx-light >/dev/null
	cargo build --release --locked -p tollgate -p tollgate-bench
	python3 benches/load/run.py --memory $(BENCH_ARGS)

## The criterion suite compared with the committed baseline (a regression shows as "regressed").
bench-compare: prereqs
	mkdir -p target/criterion && cp -r benches/results/criterion-baseline/. target/criterion/
	cargo bench --locked --bench hot_path -- --baseline-lenient main

## Re-records the committed criterion baseline (after a deliberate change; commit the result).
bench-baseline: prereqs
	cargo bench --locked --bench hot_path -- --save-baseline main --warm-up-time 1 --measurement-time 3
	rm -rf benches/results/criterion-baseline && mkdir -p benches/results/criterion-baseline
	cd target/criterion && find . -path '*/main/*' -name '*.json' -exec cp --parents {} ../../benches/results/criterion-baseline/ \;
