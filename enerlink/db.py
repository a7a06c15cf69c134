"""PostgreSQL connections and the migration step every service runs at start-up.

Migrations live in ``schemas/migrations/`` as ``NNNN_name.sql`` files or ``NNNN_name.py``
modules exposing ``def statements() -> list[str]`` (for DDL generated from the models).
They are applied in version order, each in its own transaction, under an advisory lock, and
recorded in ``Tables.MIGRATIONS``; running :func:`migrate` again is a no-op. Objects are created
in the connection's current schema, so a test isolates itself with ``options=-csearch_path=...``
in its database URL.

A service may start before PostgreSQL (or restart while it is down): :func:`migrate` waits for it,
retrying the connection with capped, jittered backoff and logging each attempt, until cancelled.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import re
import time
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from enerlink.backoff import Backoff
from enerlink.schemas import migrations
from enerlink.schemas.wire import Tables

log = logging.getLogger(__name__)


def quote(name: str) -> str:
    """Double-quote an identifier for generated SQL (names come from the catalogue, never input)."""
    return '"' + name.replace('"', '""') + '"'


MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent  # the package's folder, installed or not
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(sql|py)$")


class MigrationError(RuntimeError):
    """A migration failed; the message names it."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: Path

    def statements(self) -> list[str]:
        if self.path.suffix == ".sql":
            return [self.path.read_text(encoding="utf-8")]
        spec = importlib.util.spec_from_file_location(f"_enerlink_migration_{self.version}", self.path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        result: list[str] = module.statements()
        return result


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found: dict[int, Migration] = {}
    for path in sorted(directory.iterdir()):
        match = _NAME.match(path.name)
        if not match:
            continue
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations share version {version}: {found[version].path}, {path}")
        found[version] = Migration(version=version, name=match.group(2), path=path)
    return [found[v] for v in sorted(found)]


async def connect(url: str, *, autocommit: bool = False) -> psycopg.AsyncConnection[tuple[object, ...]]:
    """One connection; use as ``async with await connect(url) as conn``."""
    return await psycopg.AsyncConnection.connect(url, autocommit=autocommit)


async def connect_when_up(
    url: str, *, autocommit: bool = False
) -> psycopg.AsyncConnection[tuple[object, ...]]:
    """Like :func:`connect`, but wait for PostgreSQL to accept connections (backoff, until cancelled)."""
    backoff = Backoff(initial=0.5, cap=10.0)
    while True:
        try:
            return await connect(url, autocommit=autocommit)
        except psycopg.OperationalError as exc:
            delay = backoff.next_delay()
            log.warning(
                "postgres: not reachable (attempt %d, next in %.1f s): %s", backoff.attempt, delay, exc
            )
            await asyncio.sleep(delay)


def advisory_lock_id(purpose: str, schema: str | None) -> int:
    """The PostgreSQL advisory lock of one ``purpose`` (migrations, the aggregator, the archivers) in one
    schema: deployments sharing a database, and tests, stay apart."""
    return zlib.crc32(f"enerlink-{purpose}:{schema or 'public'}".encode())


async def migrate(url: str, *, until: int | None = None, skip: Collection[int] = ()) -> list[int]:
    """Apply pending migrations (waiting for PostgreSQL to be up), with ``until`` only those up to
    that version, without those in ``skip`` (a schema as an older release left it); return the
    versions applied now."""
    applied: list[int] = []
    # Autocommit: each migration's ``transaction()`` is then a real transaction, committed before the
    # advisory lock is released. (Inside an implicit outer transaction it would be a savepoint, committed
    # only after the unlock, and a process waiting on the lock would not see it: "already exists".)
    async with await connect_when_up(url, autocommit=True) as conn:
        started = time.monotonic()
        schema = str((await (await conn.execute("select current_schema()")).fetchone() or ("public",))[0])
        lock_key = advisory_lock_id("migrate", schema)
        await conn.execute("select pg_advisory_lock(%s)", (lock_key,))
        try:
            await conn.execute(
                sql.SQL(
                    "create table if not exists {} (version int primary key, name text not null,"
                    " applied_at timestamptz not null default now())"
                ).format(sql.Identifier(Tables.MIGRATIONS))
            )
            cur = await conn.execute(
                sql.SQL("select version from {}").format(sql.Identifier(Tables.MIGRATIONS))
            )
            done = {int(row[0]) for row in await cur.fetchall()}  # type: ignore[call-overload]
            for migration in discover():
                if (
                    migration.version in done
                    or migration.version in skip
                    or (until is not None and migration.version > until)
                ):
                    continue
                try:
                    async with conn.transaction():
                        for statement in migration.statements():
                            await conn.execute(statement.encode())
                        await conn.execute(
                            sql.SQL("insert into {} (version, name) values (%s, %s)").format(
                                sql.Identifier(Tables.MIGRATIONS)
                            ),
                            (migration.version, migration.name),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(f"migration {migration.path.name} failed: {exc}") from exc
                applied.append(migration.version)
        finally:
            await conn.execute("select pg_advisory_unlock(%s)", (lock_key,))
    if applied:
        log.info("schema %s: applied migrations %s in %.2f s", schema, applied, time.monotonic() - started)
    return applied
