#!/usr/bin/env python3
"""`make image`: packs the filter module into an OCI image layout in Istio's "compat"
variant (one tar+gzip layer holding plugin.wasm), reproducibly and without a container
engine, then pins its manifest digest into the WasmPlugin (istio/wasmplugin/image-pin.yaml).

    .venv/bin/python istio/tools/oci_image.py [--wasm PATH] [--out DIR] [--tag TAG] [--pin FILE | --no-pin]

Push the result unchanged (the digest stays the same), e.g.
    skopeo copy oci:target/oci/meshguard-filter:0.1.0 docker://ghcr.io/meshguard/meshguard-filter:0.1.0
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from meshguard_istio import oci, paths  # noqa: E402


def workspace_version() -> str:
    """The version in Cargo.toml's [workspace.package] (the image tag by default)."""
    text = (paths.REPO / "Cargo.toml").read_text()
    section = text.split("[workspace.package]", 1)[-1]
    match = re.search(r'^version\s*=\s*"([^"]+)"', section, re.MULTILINE)
    if not match:
        raise SystemExit("no version in Cargo.toml [workspace.package]")
    return match.group(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wasm", type=Path, default=paths.WASM)
    parser.add_argument("--out", type=Path, default=paths.OCI_LAYOUT)
    parser.add_argument("--tag", default=None, help="image tag (default: the Cargo workspace version)")
    parser.add_argument("--pin", type=Path, default=paths.IMAGE_PIN, help="kustomize patch to write the digest into")
    parser.add_argument("--no-pin", action="store_true", help="build only, leave the pin alone")
    args = parser.parse_args(argv)

    if not args.wasm.exists():
        print(f"{args.wasm} is missing: make wasm", file=sys.stderr)
        return 2
    image = oci.build(args.wasm, args.out, tag=args.tag or workspace_version())
    print(f"built {image.layout} (tag {image.tag}): manifest sha256:{image.manifest_digest}, "
          f"layer sha256:{image.layer_digest}")
    if not args.no_pin:
        before = oci.read_pin(args.pin)
        oci.write_pin(args.pin, image.manifest_digest)
        change = "unchanged" if before == image.manifest_digest else f"was {before}"
        print(f"pinned WasmPlugin sha256 in {args.pin} ({change})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
