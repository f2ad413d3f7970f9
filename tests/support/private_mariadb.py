"""A MariaDB server of a test's own, on a free port, with server settings the test chooses.

For settings that would disturb everyone else on the shared server (a low `max_connections`),
a test starts its own: `mariadb-install-db` into a temporary directory (a few seconds), then
`mariadbd` on 127.0.0.1 with the given options. The test connects as a plain user (not SUPER, so
the limits apply to it); root talks to it over the unix socket to create it and to change
settings at run time (`admin`). Skips when MariaDB's server programs are not installed.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pymysql
import pytest

from support.ports import free_port

USER, PASSWORD, DATABASE = "app", "app-password", "app"


@dataclass
class PrivateMariadb:
    port: int
    socket: str

    @property
    def url(self) -> str:
        return f"mysql+pymysql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    def admin(self, sql: str) -> None:
        """One statement as root, over the unix socket (never refused for lack of connections:
        a SUPER user may take the one connection kept back beyond max_connections)."""
        conn = pymysql.connect(unix_socket=self.socket, user="root", autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()


@contextlib.contextmanager
def private_mariadb(tmp: Path, *options: str) -> Iterator[PrivateMariadb]:
    if shutil.which("mariadbd") is None or shutil.which("mariadb-install-db") is None:
        pytest.skip("mariadbd / mariadb-install-db not installed (scripts/provision mariadb)")
    data, sock, port = tmp / "mariadb-data", str(tmp / "mariadb.sock"), free_port()
    subprocess.run(["mariadb-install-db", "--no-defaults", "--user=root", f"--datadir={data}",
                    "--auth-root-authentication-method=normal", "--skip-test-db"],
                   check=True, capture_output=True, timeout=120)
    log = open(tmp / "mariadbd.log", "wb")
    server = subprocess.Popen(["mariadbd", "--no-defaults", "--user=root", f"--datadir={data}", f"--port={port}",
                               "--bind-address=127.0.0.1", f"--socket={sock}", f"--pid-file={tmp}/mariadbd.pid",
                               "--skip-log-bin", "--innodb-buffer-pool-size=32M", *options],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        db = PrivateMariadb(port, sock)
        deadline = time.monotonic() + 60
        while True:
            try:
                db.admin("SELECT 1")
                break
            except pymysql.err.OperationalError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("private mariadbd did not start:\n"
                                       + (tmp / "mariadbd.log").read_text(errors="replace")[-3000:]) from None
                time.sleep(0.2)
        db.admin(f"CREATE DATABASE {DATABASE}")
        db.admin(f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'")
        db.admin(f"GRANT ALL ON {DATABASE}.* TO '{USER}'@'%'")
        yield db
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        log.close()
