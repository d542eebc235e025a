"""The `meshguard` CLI binary the tests run.

`MESHGUARD_CLI` picks it; by default the debug build, which `cargo test --workspace`
produces anyway (its dependencies are optimised: see [profile.dev.package."*"]), so CI
does not pay for a second, release build of the collector's dependency tree.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLI = Path(os.environ.get("MESHGUARD_CLI", REPO / "target" / "debug" / "meshguard"))


def require() -> Path:
    if not CLI.exists():
        raise FileNotFoundError(f"{CLI} is missing: cargo build -p meshguard-cli (or set MESHGUARD_CLI)")
    return CLI
