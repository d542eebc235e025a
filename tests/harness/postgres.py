"""A throwaway PostgreSQL cluster for the collector tests.

Debian's ``postgresql`` package (``/usr/lib/postgresql/*/bin``): ``initdb`` into a temporary
directory, the server process started directly on 127.0.0.1 and a free port (its socket
directory inside the temporary directory), stopped by PID (SIGINT, PostgreSQL's fast
shutdown) and deleted on ``stop()`` -- also when start-up fails. As root, ``initdb`` and
``postgres`` run as the ``postgres`` user (they refuse root). Same recipe as the Rust
store suite's ``testpg.rs``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .ports import free_port

USER = "meshguard"


def bin_dir() -> Path:
    """The newest installed PostgreSQL's bin directory."""
    found = sorted(p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists())
    if not found:
        raise RuntimeError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                           "apt-get install postgresql (.ci/run does it)")
    return found[-1]


def _as_postgres(argv: list) -> list:
    if os.geteuid() == 0:
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *map(str, argv)]
    return [str(a) for a in argv]


class PostgresCluster:
    """``with PostgresCluster() as pg: url = pg.database("audit")``."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="meshguard-pg-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "server.log"

    def start(self, timeout: float = 60.0) -> "PostgresCluster":
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        bindir = bin_dir()
        data = self.dir / "data"
        subprocess.run(_as_postgres([bindir / "initdb", "-D", data, "-U", USER, "--auth=trust", "-E", "UTF8",
                                     "--no-sync"]), check=True, capture_output=True, timeout=120)
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            _as_postgres([bindir / "postgres", "-D", data, "-h", "127.0.0.1", "-p", self.port, "-k", self.dir,
                          "-c", "fsync=off", "-c", "max_connections=200"]),
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        psql = bindir / "psql"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log.read_text()[-2000:]}")
            ok = subprocess.run([psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", "postgres",
                                 "-Atc", "SELECT 1"], capture_output=True, text=True)
            if ok.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"PostgreSQL did not start: {self.log.read_text()[-2000:]}")

    def url(self, db: str) -> str:
        return f"postgres://{USER}@127.0.0.1:{self.port}/{db}"

    def sql(self, db: str, statement: str) -> str:
        out = subprocess.run([bin_dir() / "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", db,
                              "-v", "ON_ERROR_STOP=1", "-Atc", statement], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"psql: {out.stderr}")
        return out.stdout

    def database(self, name: str) -> str:
        """Creates an empty database; its URL."""
        self.sql("postgres", f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "PostgresCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

