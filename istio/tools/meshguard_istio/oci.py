"""The filter module as an OCI image in the Wasm image spec's "compat" variant, which
istio-agent pulls for a WasmPlugin `url: oci://...`:

- exactly one layer, media type application/vnd.oci.image.layer.v1.tar+gzip, a tar
  holding `plugin.wasm` (istio-agent takes the last layer, un-gzips it and reads the
  entry whose base name is plugin.wasm);
- the manifest annotation `module.wasm.image/variant: compat` (required by the spec for
  that layer media type);
- an ordinary OCI image config (application/vnd.oci.image.config.v1+json), linux/amd64
  as `FROM scratch` images built by docker/buildah have it.

Written as an OCI image layout directory (oci-layout, index.json, blobs/sha256/...) that
`skopeo copy oci:DIR:TAG docker://REGISTRY/...` or `oras cp` push unchanged.

Byte-for-byte reproducible: the tar entry has mtime 0, uid/gid 0, mode 0644 and no user
names; the gzip member has mtime 0, no file name, OS "unknown", and its deflate stream is
made of *stored* blocks written here rather than by zlib, whose compressed output differs
between zlib versions. The digest therefore depends on nothing but the module bytes and
the tag, and anyone can rebuild and verify a published image. (The price: the layer is
not smaller than the module, about 2.4 MB.)

istio-agent compares WasmPlugin `sha256` with the image *manifest* digest (go-container-
registry's img.Digest()), so that is the digest pinned.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import struct
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import yaml

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
VARIANT_ANNOTATION = "module.wasm.image/variant"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
PLUGIN_FILE = "plugin.wasm"
_STORED_BLOCK_MAX = 0xFFFF


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(doc: dict) -> bytes:
    """Stable JSON for image documents (sorted keys, no whitespace)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def layer_tar(module: bytes) -> bytes:
    """An uncompressed tar with the single entry plugin.wasm."""
    info = tarfile.TarInfo(PLUGIN_FILE)
    info.size = len(module)
    info.mode = 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(module))
    return buffer.getvalue()


def gzip_stored(data: bytes) -> bytes:
    """A gzip member (RFC 1952) whose deflate data (RFC 1951) is stored blocks only."""
    header = b"\x1f\x8b\x08\x00" + b"\x00\x00\x00\x00" + b"\x00\xff"  # no flags, mtime 0, OS unknown
    blocks = bytearray()
    chunks = [data[i:i + _STORED_BLOCK_MAX] for i in range(0, len(data), _STORED_BLOCK_MAX)] or [b""]
    for n, chunk in enumerate(chunks):
        final = 1 if n == len(chunks) - 1 else 0
        blocks += bytes([final]) + struct.pack("<HH", len(chunk), len(chunk) ^ 0xFFFF) + chunk
    trailer = struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    return header + bytes(blocks) + trailer


@dataclass
class Image:
    """A built image: its documents and where the layout is."""

    layout: Path
    manifest_digest: str          # hex, what WasmPlugin.spec.sha256 pins
    manifest: dict
    layer_digest: str
    tag: str


def _descriptor(media_type: str, blob: bytes, annotations: dict | None = None) -> dict:
    d = {"mediaType": media_type, "digest": f"sha256:{sha256(blob)}", "size": len(blob)}
    if annotations:
        d["annotations"] = annotations
    return d


def build(module_path: Path, layout: Path, *, tag: str, title: str = "meshguard-filter") -> Image:
    """Writes the compat image of `module_path` as an OCI layout at `layout` (replacing
    whatever was there) and returns it."""
    module = module_path.read_bytes()
    tar = layer_tar(module)
    layer = gzip_stored(tar)
    config = canonical_json({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha256(tar)}"]},
    })
    manifest_doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": _descriptor(CONFIG_MEDIA_TYPE, config),
        "layers": [_descriptor(LAYER_MEDIA_TYPE, layer)],
        "annotations": {
            VARIANT_ANNOTATION: "compat",
            "org.opencontainers.image.title": title,
            "org.opencontainers.image.version": tag,
        },
    }
    manifest = canonical_json(manifest_doc)
    index = canonical_json({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [_descriptor(MANIFEST_MEDIA_TYPE, manifest, {REF_NAME_ANNOTATION: tag})],
    })
    layout.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".oci-", dir=layout.parent))
    blobs = staging / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for blob in (layer, config, manifest):
        (blobs / sha256(blob)).write_bytes(blob)
    (staging / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    (staging / "index.json").write_bytes(index)
    if layout.exists():
        shutil.rmtree(layout)
    staging.rename(layout)
    return Image(layout, sha256(manifest), manifest_doc, sha256(layer), tag)


# -- reading a layout back ------------------------------------------------------------------


class LayoutError(ValueError):
    """The directory is not a compat image layout."""


def _blob(layout: Path, digest: str) -> bytes:
    algorithm, _, hex_digest = digest.partition(":")
    if algorithm != "sha256":
        raise LayoutError(f"unsupported digest algorithm {algorithm}")
    data = (layout / "blobs" / "sha256" / hex_digest).read_bytes()
    if sha256(data) != hex_digest:
        raise LayoutError(f"blob {digest} does not match its digest")
    return data


def read(layout: Path) -> Image:
    """The single image of a layout, with every blob checked against its digest."""
    if json.loads((layout / "oci-layout").read_text()).get("imageLayoutVersion") != "1.0.0":
        raise LayoutError("oci-layout: imageLayoutVersion is not 1.0.0")
    manifests = json.loads((layout / "index.json").read_text())["manifests"]
    if len(manifests) != 1:
        raise LayoutError(f"index.json lists {len(manifests)} manifests, expected 1")
    entry = manifests[0]
    manifest = json.loads(_blob(layout, entry["digest"]))
    _blob(layout, manifest["config"]["digest"])
    layers = manifest["layers"]
    if len(layers) != 1 or layers[0]["mediaType"] != LAYER_MEDIA_TYPE:
        raise LayoutError("a compat image has exactly one tar+gzip layer")
    return Image(layout, entry["digest"].split(":", 1)[1], manifest, layers[0]["digest"].split(":", 1)[1],
                 (entry.get("annotations") or {}).get(REF_NAME_ANNOTATION, ""))


def layer_members(image: Image) -> dict[str, bytes]:
    """The files of the image's layer (name -> content), read with Python's own gzip and
    tar readers, independently of how they were written."""
    data = gzip.decompress(_blob(image.layout, f"sha256:{image.layer_digest}"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


# -- the digest pin in istio/wasmplugin/image-pin.yaml ----------------------------------------

_PIN_PREFIX = '  value: "'


def read_pin(pin_file: Path) -> str:
    """The sha256 the WasmPlugin patch pins."""
    patch = yaml.safe_load(pin_file.read_text())
    values = [op.get("value") for op in patch if op.get("path") == "/spec/sha256"]
    if len(values) != 1 or not isinstance(values[0], str):
        raise ValueError(f"{pin_file}: expected one JSON patch op on /spec/sha256 with a string value")
    return values[0]


def write_pin(pin_file: Path, digest: str) -> None:
    """Replaces the pinned digest, keeping the file's comments."""
    lines = pin_file.read_text().splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.startswith(_PIN_PREFIX)]
    if len(hits) != 1:
        raise ValueError(f"{pin_file}: expected exactly one line starting with {_PIN_PREFIX!r}")
    lines[hits[0]] = f'{_PIN_PREFIX}{digest}"\n'
    pin_file.write_text("".join(lines))
