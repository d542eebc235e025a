"""The real `meshguard collector` as a subprocess, and its query commands.

It can be stopped and started again on the same port and database, which is how the
fault tests take the audit sink away in the middle of traffic. With ``http=True`` it also
serves its HTTP API (``--http``), and with a grants key (``meshguard keygen --alg EdDSA``)
it is the approval service: require_approval events become pending approvals, which
`approvals()` / `approve()` / `deny()` handle through ``meshguard approvals ... --url``,
and approved ones are published as the signed grants document at ``GET /grants``.
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
    def __init__(self, workdir: Path, port: int | None = None, *, http: bool = False,
                 grants_key: Path | None = None, checkpoint_log: Path | None = None, store: str | None = None, extra: tuple[str, ...] = ()):
        """``store``: a postgres:// URL used instead of the SQLite file (``--store``);
        ``extra``: more collector flags (e.g. ``--retain``)."""
        self.cli = require()
        self.port = port or free_port()
        self.http_port = free_port() if http or grants_key else None
        self.grants_key = grants_key
        self.checkpoint_log = checkpoint_log
        self.db = workdir / "audit.db"
        self.store = store
        self.extra = list(extra)
        self.log = workdir / "collector.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The HTTP API's base URL (``--http``)."""
        if self.http_port is None:
            raise ValueError("this collector was started without its HTTP API (http=True)")
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 20.0) -> "MeshguardCollector":
        self._log = open(self.log, "ab")
        argv = [self.cli, "collector", "--listen", f"127.0.0.1:{self.port}", *self.location, *self.extra]
        if self.http_port is not None:
            argv += ["--http", f"127.0.0.1:{self.http_port}"]
        if self.grants_key is not None:
            argv += ["--grants-key", self.grants_key]
        if self.checkpoint_log is not None:
            argv += ["--checkpoint-log", self.checkpoint_log]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + timeout
        pending = [p for p in (self.port, self.http_port) if p is not None]
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"collector exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", pending[0]), timeout=0.2):
                    pending.pop(0)
                    if not pending:
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

    @property
    def location(self) -> list:
        """``--db FILE`` or ``--store URL``."""
        return ["--store", self.store] if self.store else ["--db", self.db]

    def kill(self) -> None:
        """Abrupt stop (SIGKILL by PID): a replica lost mid-Export."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def run(self, *args: str, check: bool = False, db: Path | None = None) -> subprocess.CompletedProcess:
        location = ["--db", db] if db else self.location
        return subprocess.run([self.cli, "audit", *args, *location],
                              capture_output=True, text=True, timeout=60, check=check)

    def events(self, **filters: str) -> list[dict]:
        args = ["query", "--format", "jsonl", "--limit", "100000"]
        for k, v in filters.items():
            args += [f"--{k}", v]
        out = self.run(*args)
        assert out.returncode == 0, out.stderr
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    def verify(self, *args: str, db: Path | None = None) -> tuple[int, dict]:
        """``meshguard audit verify --format json`` (plus e.g. ``--keys FILE``), on this
        collector's database or another file."""
        out = self.run("verify", "--format", "json", *args, db=db)
        return out.returncode, json.loads(out.stdout) if out.stdout.strip() else {}

    # --- the approval service, through the operator's CLI (`meshguard approvals`) -------

    def approvals_cli(self, *args: str) -> subprocess.CompletedProcess:
        """``meshguard approvals <args> --url <this collector>``."""
        return subprocess.run([self.cli, "approvals", *args, "--url", self.url],
                              capture_output=True, text=True, timeout=60)

    def approvals(self, status: str | None = None) -> list[dict]:
        """``meshguard approvals list --format json`` (optionally ``--status``)."""
        args = ["list", "--format", "json"] + (["--status", status] if status else [])
        out = self.approvals_cli(*args)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def approval(self, approval_id: str) -> dict | None:
        return next((a for a in self.approvals() if a.get("id") == approval_id), None)

    def approve(self, approval_id: str, ttl: str, by: str, reason: str = "") -> subprocess.CompletedProcess:
        return self.approvals_cli("approve", approval_id, "--for", ttl, "--by", by, "--reason", reason,
                                  "--format", "json")

    def deny(self, approval_id: str, by: str, reason: str = "") -> subprocess.CompletedProcess:
        return self.approvals_cli("deny", approval_id, "--by", by, "--reason", reason, "--format", "json")


def grants_keypair(workdir: Path, kid: str = "grants-e2e") -> tuple[Path, list[dict]]:
    """An Ed25519 key made by ``meshguard keygen --alg EdDSA``: the private JWK file for
    ``--grants-key`` and the public JWKs for the filter's ``grants.public_keys``."""
    workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run([require(), "keygen", "--alg", "EdDSA", "--kid", kid, "--out-dir", workdir],
                   check=True, capture_output=True, timeout=60)
    return workdir / f"{kid}.key.json", json.loads((workdir / f"{kid}.jwks.json").read_text())["keys"]
