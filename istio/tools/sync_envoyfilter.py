#!/usr/bin/env python3
"""Regenerates istio/envoyfilter/plugin-config.json from istio/wasmplugin (its pluginConfig
with policy.yaml copied in, rendered as istiod would, audit to the EnvoyFilter's own
collector cluster). Run after editing istio/wasmplugin/policy.yaml or wasmplugin.yaml:

    .venv/bin/python istio/tools/sync_envoyfilter.py

`make istio-check` fails while the file is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from meshguard_istio import paths, variants  # noqa: E402


def main() -> int:
    text = variants.envoyfilter_plugin_config(variants.source_wasm_plugin())
    target = paths.ENVOYFILTER_CONFIG
    if target.exists() and target.read_text() == text:
        print(f"{target.relative_to(paths.REPO)} is up to date")
        return 0
    target.write_text(text)  # no trailing newline: the file is the configuration string
    print(f"wrote {target.relative_to(paths.REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
