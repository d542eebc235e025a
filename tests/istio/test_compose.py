"""envoy/docker-compose.yaml cannot run here (no container engine), so it is checked for
what can go wrong without one: the YAML parses, every file it bind-mounts exists, the
Envoy config it mounts passes `envoy --mode validate` with the built module (the same
relative module path the container uses), and the Envoy clusters point at the compose
services and ports that exist."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from manifests import REPO
from meshguard_istio import envoyvalidate

COMPOSE = REPO / "envoy" / "docker-compose.yaml"
ENVOY_CONFIG = REPO / "envoy" / "envoy-compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _bind_mounts(service: dict) -> list[tuple[str, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):  # a path, not a named volume
            mounts.append((source, target))
    return mounts


def test_compose_services(compose):
    services = compose["services"]
    assert set(services) == {"envoy", "collector", "upstream"}
    assert services["envoy"]["image"].startswith("envoyproxy/envoy:")
    assert services["collector"]["image"] == "ghcr.io/meshguard/meshguard:0.1.0"
    assert services["collector"]["command"][:1] == ["collector"]
    named = {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])
             if not v.startswith((".", "/"))}
    assert named <= set(compose.get("volumes", {})), "every named volume is declared"


def test_bind_mounted_files_exist(compose, module):
    for name, service in compose["services"].items():
        for source, _ in _bind_mounts(service):
            assert (COMPOSE.parent / source).resolve().exists(), f"{name}: {source} does not exist"


def test_envoy_gets_the_config_and_module_where_it_looks(compose):
    envoy = compose["services"]["envoy"]
    mounts = {target: (COMPOSE.parent / source).resolve() for source, target in _bind_mounts(envoy)}
    config_in_container = envoy["command"][envoy["command"].index("-c") + 1]
    assert mounts[config_in_container] == ENVOY_CONFIG
    config = yaml.safe_load(ENVOY_CONFIG.read_text())
    module = _find(config, "filename")
    assert not module.startswith("/"), "relative, so the same file validates from the repository root"
    assert mounts[str(Path(envoy["working_dir"]) / module)] == (REPO / module).resolve()


def test_envoy_clusters_name_compose_services(compose):
    config = yaml.safe_load(ENVOY_CONFIG.read_text())
    for cluster in config["static_resources"]["clusters"]:
        address = _find(cluster, "socket_address")
        assert address["address"] in compose["services"], f"{cluster['name']}: no service {address['address']}"
    collector_args = compose["services"]["collector"]["command"]
    assert collector_args[collector_args.index("--listen") + 1].endswith(":4317")


def test_compose_envoy_config_validates(module):
    """As `make validate` runs it: from the repository root, with the built module."""
    result = envoyvalidate.validate_file(ENVOY_CONFIG, cwd=REPO)
    assert result.ok, result.summary()
    assert "meshguard: configured: mode enforce" in result.output


def _find(node, key):
    if isinstance(node, dict):
        if key in node:
            return node[key]
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        found = _find(child, key)
        if found is not None:
            return found
    return None
