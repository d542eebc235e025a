"""How the EnvoyFilter variant's plugin configuration derives from the WasmPlugin's.

kustomize cannot put a policy file into the middle of a JSON string, so the EnvoyFilter's
configuration lives in istio/envoyfilter/plugin-config.json, generated from the rendered
WasmPlugin (istio/wasmplugin) by `sync_envoyfilter.py` and verified by istio-check. The
only difference: the audit collector is the cluster the EnvoyFilter ADDs.
"""

from __future__ import annotations

import copy

from . import istiod, kustomize, paths

ENVOYFILTER_COLLECTOR_CLUSTER = "meshguard-collector"


def source_wasm_plugin() -> dict:
    """The WasmPlugin of istio/wasmplugin, rendered (policy.yaml already copied in)."""
    plugins = kustomize.find(kustomize.render(paths.ISTIO_DIR / "wasmplugin"), "WasmPlugin")
    if len(plugins) != 1:
        raise ValueError(f"istio/wasmplugin renders {len(plugins)} WasmPlugins, expected 1")
    return plugins[0]


def envoyfilter_plugin_config(wasm_plugin: dict) -> str:
    """The EnvoyFilter's configuration string for this WasmPlugin: the same JSON istiod
    would produce, with audit.cluster set to the EnvoyFilter's own collector cluster."""
    config = copy.deepcopy(wasm_plugin["spec"]["pluginConfig"])
    config.setdefault("audit", {})["cluster"] = ENVOYFILTER_COLLECTOR_CLUSTER
    return istiod.plugin_config_json(config)
