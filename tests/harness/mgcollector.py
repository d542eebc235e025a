"""The real `meshguard collector` as a subprocess, and its query commands.

It can be stopped and started again on the same port and database, which is how the
fault tests take the audit sink away in the middle of traffic.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

from .cli import require
from .ports import free_port


class MeshguardCollector:
    def __init__(self, workdir: Path, port: int | None = None):
        self.cli = require()
        self.port = port or free_port()
        self.db = workdir / "audit.db"
        self.log = workdir / "collector.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "MeshguardCollector":
        self._log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [self.cli, "collector", "--listen", f"127.0.0.1:{self.port}", "--db", self.db],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"collector exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("collector did not start listening")

    def stop(self) -> None:
        """Graceful stop (SIGTERM: in-flight Exports finish, WAL checkpointed)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def run(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run([self.cli, "audit", *args, "--db", self.db],
                              capture_output=True, text=True, timeout=60, check=check)

    def events(self, **filters: str) -> list[dict]:
        args = ["query", "--format", "jsonl", "--limit", "100000"]
        for k, v in filters.items():
            args += [f"--{k}", v]
        out = self.run(*args)
        assert out.returncode == 0, out.stderr
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    def verify(self) -> tuple[int, dict]:
        out = self.run("verify", "--format", "json")
        return out.returncode, json.loads(out.stdout) if out.stdout.strip() else {}
