"""The validator calibrated on Istio's own examples (../shared/istio/testdata): every
valid document passes (CRD schema, CEL rules and, for EnvoyFilters, Envoy's protos) and
every invalid one fails with the error Istio's test expects (its `_err` substring of the
API server's message)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from meshguard_istio import check, paths


def _documents() -> list:
    cases = []
    for path in paths.testdata_files():
        for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is None:
                continue
            name = (doc.get("metadata") or {}).get("name", "?")
            cases.append(pytest.param(path.name, doc, id=f"{path.stem}[{index}]-{name}"))
    return cases


DOCUMENTS = _documents()


def test_testdata_is_there():
    """The shared examples are read at run time (ISTIO_SHARED_DIR overrides the place)."""
    names = {p.name for p in paths.testdata_files()}
    assert {"wasm-valid.yaml", "wasm-invalid.yaml", "envoyfilter-valid.yaml", "envoyfilter-invalid.yaml"} <= names
    assert len(DOCUMENTS) >= 20


@pytest.mark.parametrize("source, doc", DOCUMENTS)
def test_istio_example(source: str, doc: dict):
    doc = dict(doc)
    expected = doc.pop("_err", None)
    errors = check.object_errors(doc)
    if "-invalid" not in source:
        assert expected is None
        assert errors == [], f"a valid Istio example was rejected: {errors}"
    else:
        assert expected is not None, "invalid examples name their expected error"
        assert errors, f"an invalid Istio example passed (expected {expected!r})"
        assert any(expected in e for e in errors), f"expected an error containing {expected!r}, got {errors}"


def test_shared_dir_is_overridable(monkeypatch, tmp_path):
    """ISTIO_SHARED_DIR moves the schema and examples; a wrong place is a clear error."""
    monkeypatch.setenv("ISTIO_SHARED_DIR", str(tmp_path))
    assert paths.crds_file() == tmp_path / "crds.gen.yaml"
    proc = subprocess.run([sys.executable, str(paths.ISTIO_DIR / "tools" / "istio_check.py")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"{tmp_path / 'crds.gen.yaml'} not found (set ISTIO_SHARED_DIR)" in proc.stderr
