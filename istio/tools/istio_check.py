#!/usr/bin/env python3
"""`make istio-check`: renders every kustomization under istio/, validates every object
(Istio kinds against Istio's CRD schema with CEL rules, core kinds against Kubernetes'
schemas, EnvoyFilter patches against Envoy's protos), runs every plugin configuration
through the real filter in Envoy (`envoy --mode validate`, rendered as istiod does),
and checks the image pin and the EnvoyFilter configuration. Exit status 1 on any error.

    .venv/bin/python istio/tools/istio_check.py [DIR ...] [--wasm PATH] [--oci-layout DIR]

DIRs default to every directory under istio/ holding a kustomization.yaml. Istio's CRDs
are read from ../shared/istio beside the repository, or from $ISTIO_SHARED_DIR.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from meshguard_istio import check, paths  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="*", type=Path, help="kustomization directories (default: all under istio/)")
    parser.add_argument("--wasm", type=Path, default=paths.WASM, help="the filter module")
    parser.add_argument("--oci-layout", type=Path, default=paths.OCI_LAYOUT, help="the image built by make image")
    parser.add_argument("--no-sync-check", action="store_true",
                        help="skip the istio/envoyfilter/plugin-config.json freshness check")
    args = parser.parse_args(argv)

    started = time.monotonic()
    if not paths.crds_file().exists():
        print(f"istio-check: {paths.crds_file()} not found (set ISTIO_SHARED_DIR)", file=sys.stderr)
        return 2
    directories = [d.resolve() for d in args.dirs] or paths.kustomizations()
    report = check.run(directories, module=args.wasm.resolve(), layout=args.oci_layout.resolve(),
                       check_sync=not args.no_sync_check)

    for r in report.rendered:
        kinds = ", ".join(check.object_id(o) for o in r.objects)
        print(f"rendered {r.label}: {len(r.objects)} objects ({kinds})")
    for target in report.targets:
        print(f"envoy --mode validate: {target.label} [{', '.join(dict.fromkeys(target.sources))}]")
    for finding in report.findings:
        print(finding)
    objects = sum(len(r.objects) for r in report.rendered)
    status = "FAILED" if report.errors else "OK"
    print(f"istio-check {status}: {len(report.rendered)} kustomizations, {objects} objects validated "
          f"against {paths.crds_file()}, {len(report.targets)} filter configurations run in Envoy, "
          f"{len(report.errors)} errors ({time.monotonic() - started:.1f}s)")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
