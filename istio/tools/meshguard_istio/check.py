"""`make istio-check` as functions: each check returns findings, the CLI prints them.

1. Every kustomization under istio/ renders with `kubectl kustomize`.
2. Every rendered object is valid: Istio kinds against Istio's CRD schema (strict, CEL
   rules evaluated), core kinds against Kubernetes' schemas; EnvoyFilter patch values
   parse as Envoy protos.
3. The real filter accepts every plugin configuration, in the real Envoy: WasmPlugins as
   istiod renders them (Go jsonpb JSON, Istio cluster names), EnvoyFilters with their
   patches applied to a sidecar-shaped bootstrap.
4. The WasmPlugin's sha256 is pinned and, when `make image` has built the image, equals
   its manifest digest; the EnvoyFilter's configuration is in sync with the WasmPlugin's.
"""

from __future__ import annotations

import copy
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import (bootstrap, corekinds, crds, envoyprotos, envoyvalidate, istiod, kustomize, oci, paths,
               variants)

ERROR, WARNING, NOTE = "error", "warning", "note"
MESHGUARD_IMAGE = "meshguard-filter"


@dataclass
class Finding:
    where: str
    message: str
    severity: str = ERROR

    def __str__(self) -> str:
        return f"{self.severity.upper():7} {self.where}: {self.message}"


@dataclass
class Rendered:
    """One kustomization and the objects it renders."""

    directory: Path
    objects: list[dict] = field(default_factory=list)

    @property
    def label(self) -> str:
        try:
            return str(self.directory.relative_to(paths.REPO)) + "/"
        except ValueError:
            return str(self.directory)


def object_id(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')} {ns}{meta.get('name')}"


# -- 1 + 2: render and validate ---------------------------------------------------------------


def render_all(directories: list[Path]) -> tuple[list[Rendered], list[Finding]]:
    rendered, findings = [], []
    for directory in directories:
        r = Rendered(directory)
        try:
            r.objects = kustomize.render(directory)
        except kustomize.KustomizeError as e:
            findings.append(Finding(r.label, str(e)))
        rendered.append(r)
    return rendered, findings


def object_errors(obj: dict, crds_file: Path | None = None) -> list[str]:
    """Everything wrong with one object, whatever its kind."""
    if crds.is_custom_resource(obj, crds_file):
        errors = crds.validate(obj, crds_file)
        if obj.get("kind") == "EnvoyFilter":
            errors += envoyprotos.patch_errors(obj)
        return errors
    return corekinds.validate(obj)


def schema_findings(rendered: list[Rendered]) -> list[Finding]:
    findings = []
    for r in rendered:
        for obj in r.objects:
            for error in object_errors(obj):
                findings.append(Finding(f"{r.label} {object_id(obj)}", error))
    return findings


# -- 3: the plugin configurations in the real filter ---------------------------------------------


@dataclass
class EnvoyTarget:
    """One distinct configuration to run through `envoy --mode validate`."""

    label: str
    bootstrap: dict
    sources: list[str] = field(default_factory=list)


def _wasm_plugin_target(obj: dict, module: Path) -> tuple[str, EnvoyTarget]:
    plugin_config = obj["spec"].get("pluginConfig") or {}
    # Validation never connects: any port will do (9, discard). The audit cluster speaks gRPC.
    callouts = {name: (9, name == (plugin_config.get("audit") or {}).get("cluster"))
                for name in istiod.referenced_clusters(plugin_config)}
    sidecar = bootstrap.Sidecar(callouts=callouts, namespace=obj["metadata"].get("namespace", "default"))
    http_filter = {"name": f"{sidecar.namespace}.{obj['metadata']['name']}",
                   "typed_config": istiod.wasm_filter(obj, str(module))}
    key = json.dumps(["WasmPlugin", istiod.plugin_config_json(plugin_config), sorted(callouts)])
    return key, EnvoyTarget(f"WasmPlugin pluginConfig ({object_id(obj)})", bootstrap.render(sidecar, [http_filter]))


def _with_local_module(value: object, module: Path) -> object:
    """The patch value with every wasm `code.local.filename` pointing at the built module
    (the path inside a pod does not exist here)."""
    if isinstance(value, dict):
        out = {k: _with_local_module(v, module) for k, v in value.items()}
        if isinstance(out.get("code"), dict) and "local" in out["code"]:
            out["code"] = {"local": {"filename": str(module)}}
        return out
    if isinstance(value, list):
        return [_with_local_module(v, module) for v in value]
    return value


def _envoy_filter_target(obj: dict, module: Path) -> tuple[str, EnvoyTarget, list[str]]:
    filters, clusters, skipped = [], [], []
    for i, cp in enumerate(obj["spec"].get("configPatches") or []):
        patch = cp.get("patch") or {}
        value = patch.get("value")
        if cp.get("applyTo") == "HTTP_FILTER" and value and patch.get("operation") in (
                "INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST", "ADD"):
            filters.append(_with_local_module(copy.deepcopy(value), module))
        elif cp.get("applyTo") == "CLUSTER" and patch.get("operation") == "ADD" and value:
            clusters.append(copy.deepcopy(value))
        else:
            skipped.append(f"configPatches[{i}] ({cp.get('applyTo')} {patch.get('operation')}) is not "
                           "applied in the Envoy run (only HTTP_FILTER inserts and CLUSTER ADDs are)")
    key = json.dumps(["EnvoyFilter", filters, clusters], sort_keys=True)
    target = EnvoyTarget(f"EnvoyFilter patches ({object_id(obj)})",
                         bootstrap.render(bootstrap.Sidecar(), filters, clusters))
    return key, target, skipped


def envoy_targets(rendered: list[Rendered], module: Path) -> tuple[list[EnvoyTarget], list[Finding]]:
    """The distinct filter configurations of all kustomizations (a WasmPlugin included by
    several kustomizations is run once)."""
    targets: dict[str, EnvoyTarget] = {}
    notes = []
    for r in rendered:
        for obj in r.objects:
            if obj.get("kind") == "WasmPlugin":
                key, target = _wasm_plugin_target(obj, module)
            elif obj.get("kind") == "EnvoyFilter":
                key, target, skipped = _envoy_filter_target(obj, module)
                notes += [Finding(f"{r.label} {object_id(obj)}", s, NOTE) for s in skipped]
            else:
                continue
            targets.setdefault(key, target).sources.append(r.label)
    return list(targets.values()), notes


def filter_findings(targets: list[EnvoyTarget], module: Path) -> list[Finding]:
    if not module.exists():
        return [Finding(str(module), "the filter module is not built (make wasm): plugin configurations "
                                     "cannot be checked in Envoy")]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda t: envoyvalidate.validate(t.bootstrap), targets))
    findings = []
    for target, result in zip(targets, results):
        where = f"{target.label} in {', '.join(dict.fromkeys(target.sources))}"
        if not result.ok:
            findings.append(Finding(where, "rejected by envoy --mode validate:\n" + result.summary()))
    return findings


# -- 4: image pin, EnvoyFilter sync ------------------------------------------------------------


def image_pin_findings(rendered: list[Rendered], layout: Path, module: Path) -> list[Finding]:
    findings = []
    plugins = {(r.label, object_id(o)): o for r in rendered for o in r.objects
               if o.get("kind") == "WasmPlugin" and MESHGUARD_IMAGE in str(o["spec"].get("url", ""))}
    image = None
    if (layout / "index.json").exists():
        try:
            image = oci.read(layout)
        except (oci.LayoutError, OSError, ValueError, KeyError) as e:
            findings.append(Finding(str(layout), f"not a valid compat image layout: {e}"))
    else:
        findings.append(Finding(str(layout), "no image built (make image): WasmPlugin sha256 checked for "
                                             "presence and format only", NOTE))
    for (label, oid), obj in plugins.items():
        pinned = obj["spec"].get("sha256", "")
        if not pinned:
            findings.append(Finding(f"{label} {oid}", "spec.sha256 is not pinned (make image writes it)"))
        elif image is not None and pinned != image.manifest_digest:
            findings.append(Finding(f"{label} {oid}",
                                    f"spec.sha256 {pinned} is not the manifest digest {image.manifest_digest} "
                                    f"of the built image {layout}: run `make image` (it rewrites "
                                    f"{paths.IMAGE_PIN.relative_to(paths.REPO)}) and commit the pin"))
    if image is not None and module.exists():
        if oci.layer_members(image).get(oci.PLUGIN_FILE) != module.read_bytes():
            findings.append(Finding(str(layout), f"the image holds an older module than {module}: "
                                                 "run `make image` to rebuild and re-pin", WARNING))
    return findings


def envoyfilter_sync_findings() -> list[Finding]:
    try:
        expected = variants.envoyfilter_plugin_config(variants.source_wasm_plugin())
    except (kustomize.KustomizeError, ValueError) as e:
        return [Finding("istio/wasmplugin/", str(e))]
    actual = paths.ENVOYFILTER_CONFIG.read_text() if paths.ENVOYFILTER_CONFIG.exists() else ""
    if actual != expected:
        return [Finding(str(paths.ENVOYFILTER_CONFIG.relative_to(paths.REPO)),
                        "out of date with istio/wasmplugin (policy or config changed): run "
                        "`.venv/bin/python istio/tools/sync_envoyfilter.py`")]
    return []


# -- everything ---------------------------------------------------------------------------------


@dataclass
class Report:
    rendered: list[Rendered]
    targets: list[EnvoyTarget]
    findings: list[Finding]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]


def run(directories: list[Path], *, module: Path = paths.WASM, layout: Path = paths.OCI_LAYOUT,
        check_sync: bool = True) -> Report:
    rendered, findings = render_all(directories)
    findings += schema_findings(rendered)
    targets, notes = envoy_targets(rendered, module)
    findings += notes
    findings += filter_findings(targets, module)
    findings += image_pin_findings(rendered, layout, module)
    if check_sync:
        findings += envoyfilter_sync_findings()
    return Report(rendered, targets, findings)
