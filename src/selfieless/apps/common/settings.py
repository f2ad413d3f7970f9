"""Settings of one service replica, from command-line flags or SELFIELESS_* environment variables."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

DEFAULT_MAX_BODY = 16 * 1024 * 1024
DEFAULT_DB_POOL = 4  # connections a replica's requests may hold to a server database


@dataclass(frozen=True)
class ServiceSettings:
    database_url: str
    host: str = "127.0.0.1"
    port: int = 8000
    users_url: str = "http://127.0.0.1:80"
    public_url: str = ""
    allow_crash: bool = False   # POST _crash: opt-in (the course stacks turn it on)
    max_body_bytes: int = DEFAULT_MAX_BODY
    users_timeout: float = 5.0
    access_log: bool = True
    db_pool: int = DEFAULT_DB_POOL

    @property
    def origin(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("0", "false", "no", "off", "")


def _positive(text) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def parse_settings(service: str, argv: list[str] | None = None, with_users_url: bool = False) -> ServiceSettings:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog=f"python -m selfieless.apps.{service}",
                                     description=f"Run one replica of the SelfieLessActs {service} service.")
    parser.add_argument("--host", default=env("SELFIELESS_HOST", "127.0.0.1"),
                        help="address to bind (env SELFIELESS_HOST) [%(default)s]")
    parser.add_argument("--port", type=int, default=int(env("SELFIELESS_PORT", "8000")),
                        help="port to bind (env SELFIELESS_PORT) [%(default)s]")
    parser.add_argument("--database-url", default=env("SELFIELESS_DATABASE_URL", f"sqlite:///{service}.db"),
                        help="SQLAlchemy URL: sqlite:///file.db, mysql://user:pw@host/db, "
                             "postgresql://user:pw@host/db (env SELFIELESS_DATABASE_URL) [%(default)s]")
    if with_users_url:
        parser.add_argument("--users-url", default=env("SELFIELESS_USERS_URL", "http://127.0.0.1:80"),
                            help="base URL of the users service, normally the gateway (env SELFIELESS_USERS_URL) "
                                 "[%(default)s]")
    parser.add_argument("--public-url", default=env("SELFIELESS_PUBLIC_URL", ""),
                        help="this replica's public address, sent as Origin (env SELFIELESS_PUBLIC_URL) "
                             "[http://HOST:PORT]")
    # Off unless asked for: a replica behind a public gateway must not let anyone break it.
    crash = parser.add_mutually_exclusive_group()
    crash.add_argument("--allow-crash", action="store_true", default=_env_bool("SELFIELESS_ALLOW_CRASH", False),
                       help="enable the POST /api/v1/_crash fault injection (env SELFIELESS_ALLOW_CRASH=1; "
                            "the bundled course stacks set it)")
    crash.add_argument("--no-crash", action="store_true",
                       help="disable it even when SELFIELESS_ALLOW_CRASH is set")
    parser.add_argument("--max-body-bytes", type=int,
                        default=int(env("SELFIELESS_MAX_BODY_BYTES", str(DEFAULT_MAX_BODY))),
                        help="largest request body accepted, else 413 (env SELFIELESS_MAX_BODY_BYTES) [%(default)s]")
    parser.add_argument("--db-pool", type=_positive, default=env("SELFIELESS_DB_POOL", str(DEFAULT_DB_POOL)),
                        help="most connections this replica's requests hold to a MariaDB/PostgreSQL server; "
                             "2 more serve the health check and multi-statement writes "
                             "(env SELFIELESS_DB_POOL) [%(default)s]")
    parser.add_argument("--no-access-log", action="store_true",
                        default=not _env_bool("SELFIELESS_ACCESS_LOG", True),
                        help="do not write a line per request to standard output (env SELFIELESS_ACCESS_LOG=0)")
    args = parser.parse_args(argv)
    return ServiceSettings(
        database_url=args.database_url,
        host=args.host,
        port=args.port,
        users_url=getattr(args, "users_url", "http://127.0.0.1:80"),
        public_url=args.public_url,
        allow_crash=args.allow_crash and not args.no_crash,
        max_body_bytes=args.max_body_bytes,
        access_log=not args.no_access_log,
        db_pool=args.db_pool,
    )
