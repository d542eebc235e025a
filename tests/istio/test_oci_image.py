"""`make image`: the compat OCI layout of the module, its reproducibility, and the pin
it writes into the WasmPlugin. Builds go to temporary directories and a copy of istio/,
never to target/oci or the committed pin."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import sys
import tarfile
import zlib

import pytest

from manifests import REPO, only
from meshguard_istio import check, kustomize, oci

MAKE_IMAGE = REPO / "istio" / "tools" / "oci_image.py"


@pytest.fixture(scope="module")
def image(tmp_path_factory, module) -> oci.Image:
    return oci.build(module, tmp_path_factory.mktemp("oci") / "meshguard-filter", tag="0.1.0")


def test_layout_structure(image):
    layout = image.layout
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    assert index["mediaType"] == oci.INDEX_MEDIA_TYPE
    [entry] = index["manifests"]
    assert entry["mediaType"] == oci.MANIFEST_MEDIA_TYPE
    assert entry["annotations"] == {oci.REF_NAME_ANNOTATION: "0.1.0"}
    assert entry["digest"] == f"sha256:{image.manifest_digest}"
    blobs = sorted(p.name for p in (layout / "blobs" / "sha256").iterdir())
    assert len(blobs) == 3  # manifest, config, layer
    for name in blobs:
        assert oci.sha256((layout / "blobs" / "sha256" / name).read_bytes()) == name


def test_manifest_is_the_compat_variant(image):
    manifest = image.manifest
    assert manifest["mediaType"] == oci.MANIFEST_MEDIA_TYPE
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert [l["mediaType"] for l in manifest["layers"]] == ["application/vnd.oci.image.layer.v1.tar+gzip"]
    assert manifest["annotations"]["module.wasm.image/variant"] == "compat"
    config = json.loads((image.layout / "blobs" / "sha256" / manifest["config"]["digest"][7:]).read_bytes())
    tar = gzip.decompress((image.layout / "blobs" / "sha256" / image.layer_digest).read_bytes())
    assert config["rootfs"] == {"type": "layers", "diff_ids": [f"sha256:{oci.sha256(tar)}"]}


def test_layer_holds_exactly_the_module(image, module):
    """Read back with Python's gzip and tarfile: one regular file, plugin.wasm, identical
    to the module."""
    layer = (image.layout / "blobs" / "sha256" / image.layer_digest).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
        members = tar.getmembers()
        assert [(m.name, m.isfile(), m.mode, m.mtime, m.uid) for m in members] == [
            ("plugin.wasm", True, 0o644, 0, 0)]
        assert tar.extractfile(members[0]).read() == module.read_bytes()
    assert oci.layer_members(image) == {"plugin.wasm": module.read_bytes()}


def test_build_is_reproducible(image, module, tmp_path):
    again = oci.build(module, tmp_path / "again", tag="0.1.0")
    assert again.manifest_digest == image.manifest_digest
    for blob in (image.layout / "blobs" / "sha256").iterdir():
        assert (tmp_path / "again" / "blobs" / "sha256" / blob.name).read_bytes() == blob.read_bytes()


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 200_001])
def test_stored_gzip_is_standard_gzip(size):
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    packed = oci.gzip_stored(data)
    assert gzip.decompress(packed) == data
    assert zlib.decompress(packed, 16 + zlib.MAX_WBITS) == data


def test_make_image_pins_the_manifest_digest(istio_copy, tmp_path, module):
    """What `make image` does, on a copy: build the layout, rewrite the pin; the rendered
    WasmPlugins then carry the manifest digest, and istio-check's pin check agrees."""
    layout = tmp_path / "oci" / "meshguard-filter"
    pin = istio_copy / "wasmplugin" / "image-pin.yaml"
    oci.write_pin(pin, "0" * 64)
    proc = subprocess.run([sys.executable, str(MAKE_IMAGE), "--out", str(layout), "--pin", str(pin)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    built = oci.read(layout)
    assert f"manifest sha256:{built.manifest_digest}" in proc.stdout
    assert "# Written by `make image`" in pin.read_text(), "comments survive the rewrite"
    rendered = []
    for directory in ("wasmplugin", "gateway", "live"):
        objects = kustomize.render(istio_copy / directory)
        assert only(objects, "WasmPlugin")["spec"]["sha256"] == built.manifest_digest
        rendered.append(check.Rendered(istio_copy / directory, objects))
    assert [f for f in check.image_pin_findings(rendered, layout, module) if f.severity != check.NOTE] == []


def test_pin_mismatch_is_an_error(istio_copy, tmp_path, module):
    layout = tmp_path / "meshguard-filter"
    oci.build(module, layout, tag="0.1.0")
    oci.write_pin(istio_copy / "wasmplugin" / "image-pin.yaml", "a" * 64)
    rendered = [check.Rendered(istio_copy, kustomize.render(istio_copy / "wasmplugin"))]
    errors = [f for f in check.image_pin_findings(rendered, layout, module) if f.severity == check.ERROR]
    assert len(errors) == 1 and "is not the manifest digest" in errors[0].message


def test_stale_image_is_a_warning(istio_copy, tmp_path, module):
    older = tmp_path / "older.wasm"
    older.write_bytes(module.read_bytes() + b"\0")
    layout = tmp_path / "meshguard-filter"
    built = oci.build(older, layout, tag="0.1.0")
    oci.write_pin(istio_copy / "wasmplugin" / "image-pin.yaml", built.manifest_digest)
    rendered = [check.Rendered(istio_copy, kustomize.render(istio_copy / "wasmplugin"))]
    findings = check.image_pin_findings(rendered, layout, module)
    assert [f.severity for f in findings] == [check.WARNING]
    assert "older module" in findings[0].message


@pytest.mark.skipif(not shutil.which("skopeo"), reason="skopeo not installed (apt-get install skopeo)")
def test_skopeo_reads_the_layout(image):
    """An independent OCI implementation agrees on the digest and the media types."""
    raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{image.layout}:0.1.0"], capture_output=True,
                         check=True, timeout=60).stdout
    assert oci.sha256(raw) == image.manifest_digest
    info = json.loads(subprocess.run(["skopeo", "inspect", f"oci:{image.layout}:0.1.0"], capture_output=True,
                                     check=True, timeout=60).stdout)
    assert info["Digest"] == f"sha256:{image.manifest_digest}"


@pytest.mark.skipif(not shutil.which("umoci"), reason="umoci not installed (apt-get install umoci)")
def test_umoci_unpacks_plugin_wasm(image, module, tmp_path):
    subprocess.run(["umoci", "raw", "unpack", "--rootless", "--image", f"{image.layout}:0.1.0",
                    str(tmp_path / "rootfs")], capture_output=True, check=True, timeout=60)
    assert sorted(p.name for p in (tmp_path / "rootfs").iterdir()) == ["plugin.wasm"]
    assert (tmp_path / "rootfs" / "plugin.wasm").read_bytes() == module.read_bytes()
