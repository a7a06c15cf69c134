"""Leases on the aggregator's shards, in PostgreSQL: which process works on which part of the fleet.

With ``ENERLINK_AGGREGATE_SHARDS`` = N > 1 the fleet is cut into N shards (enerlink/shards.py) and
each aggregator process renews, every third of ``ENERLINK_AGGREGATE_LEASE_S``, in one transaction:

- its member row (alive until now + the lease), dropping the rows of members past their time;
- its leases (each until now + the lease);
- its fair share: with M live members ordered by name, the member at rank r holds N // M shards,
  one more when r < N % M. A member holding more releases the extras (highest first); one holding
  fewer takes free shards: never leased, released, or expired (their owner stopped renewing:
  killed, cut off, paused).

A process that dies is out after one lease: its shards are free, and the next renewal of another
process takes them (a takeover within 4/3 of a lease), whose job then catches up from the shard's
watermark. PostgreSQL's clock is the only one compared. The leases assign the work; the job's
advisory lock on the shard (store.lock) keeps two processes off one shard even while a lease
changes hands under an old owner still in a job: the new owner skips the shard until that job is
over (a dead client's session is closed by PostgreSQL within about 25 s), and tries again shortly.

Every process checks the number of shards at start (:func:`ensure_layout`) and at each renewal;
every job checks it again under its layout's lock (:func:`layout_is`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from enerlink.aggregator.store import Conn, layout_key
from enerlink.db import quote
from enerlink.schemas.wire import Tables

log = logging.getLogger(__name__)

_LEASES = quote(Tables.AGGREGATOR_LEASES)
_MEMBERS = quote(Tables.AGGREGATOR_MEMBERS)
_UNTIL = "now() + make_interval(secs => %(lease)s)"
_WATERMARKS = quote(Tables.AGGREGATOR_WATERMARK)


class LayoutError(RuntimeError):
    """Live aggregators hold leases on another number of shards."""


class LayoutBusy(RuntimeError):
    """A job of the previous number of shards still runs: the change waits for it."""


def fair_share(shards: int, members: list[str], owner: str) -> int:
    """How many of ``shards`` the member ``owner`` holds among the live ``members`` (itself included)."""
    ranked = sorted({*members, owner})
    rank = ranked.index(owner)
    return shards // len(ranked) + (1 if rank < shards % len(ranked) else 0)


@dataclass(slots=True)
class Leases:
    """One process's leases: ``renew`` once at start and then every ``lease_s / 3`` seconds."""

    owner: str
    shards: int
    lease_s: float
    held: frozenset[int] = field(default=frozenset())

    async def renew(self, conn: Conn) -> frozenset[int]:
        """Renew, release and take leases (see the module docstring); returns the shards held."""
        params = {"me": self.owner, "n": self.shards, "lease": self.lease_s}
        async with conn.transaction():
            await conn.execute(
                f"insert into {_MEMBERS} (owner, expires_at) values (%(me)s, {_UNTIL})"
                " on conflict (owner) do update set expires_at = excluded.expires_at".encode(),
                params,
            )
            await conn.execute(f"delete from {_MEMBERS} where expires_at < now()".encode())
            await ensure_layout(conn, self.shards, owner=self.owner)
            cur = await conn.execute(
                f"select owner from {_MEMBERS} where expires_at >= now() order by owner".encode()
            )
            share = fair_share(self.shards, [str(row[0]) for row in await cur.fetchall()], self.owner)
            cur = await conn.execute(
                f"update {_LEASES} set expires_at = {_UNTIL} where owner = %(me)s returning shard".encode(),
                params,
            )
            held = {int(row[0]) for row in await cur.fetchall()}
            if len(held) > share:
                extras = sorted(held)[share:]
                await conn.execute(
                    f"update {_LEASES} set owner = null, expires_at = now()"
                    " where shard = any(%(extras)s) and owner = %(me)s".encode(),
                    {**params, "extras": extras},
                )
                held -= set(extras)
            elif len(held) < share:
                cur = await conn.execute(
                    f"update {_LEASES} l set owner = %(me)s, expires_at = {_UNTIL}, acquired_at = now()"
                    f" from (select shard from {_LEASES} where owner is null or expires_at < now()"
                    "   order by shard limit %(want)s for update skip locked) free"
                    " where l.shard = free.shard returning l.shard".encode(),
                    {**params, "want": share - len(held)},
                )
                held |= {int(row[0]) for row in await cur.fetchall()}
        gained, lost = held - self.held, self.held - held
        if gained or lost:
            log.info(
                "aggregate: %s holds shards %s of %d (took %s, gave up %s)",
                self.owner,
                sorted(held),
                self.shards,
                sorted(gained) or "none",
                sorted(lost) or "none",
            )
        self.held = frozenset(held)
        return self.held

    async def release(self, conn: Conn) -> None:
        """Give every lease up at once (a clean stop: the others need not wait for them to expire)."""
        async with conn.transaction():
            await conn.execute(
                f"update {_LEASES} set owner = null, expires_at = now() where owner = %(me)s".encode(),
                {"me": self.owner},
            )
            await conn.execute(f"delete from {_MEMBERS} where owner = %(me)s".encode(), {"me": self.owner})
        if self.held:
            log.info("aggregate: %s gave up shards %s", self.owner, sorted(self.held))
        self.held = frozenset()


async def ensure_layout(conn: Conn, shards: int, *, owner: str = "") -> None:
    """Make ``shards`` the deployment's number of shards, inside the caller's transaction: one lease
    row per shard (none for the whole fleet).

    Rows of another number are replaced only when no live aggregator other than ``owner`` holds one
    (else :class:`LayoutError`) and no job of that layout still runs (else :class:`LayoutBusy`: its
    process may be stuck while its lease ran out). The shards' state rows of that layout are dropped
    with them, so the new shards start from the fleet's watermark (the minutes after it are written
    again, replacing the rows there) and from the plain rows of device health and closed buckets.
    The table is locked for the check, so two processes never change it at once."""
    params = {"me": owner, "n": shards}
    await conn.execute(f"lock table {_LEASES} in share row exclusive mode".encode())
    cur = await conn.execute(
        "select shards, count(*) filter (where owner is not null and owner <> %(me)s"
        f" and expires_at >= now()) from {_LEASES} where shards <> %(n)s group by shards".encode(),
        params,
    )
    others = {int(n): int(live) for n, live in await cur.fetchall()}
    if any(others.values()):
        raise LayoutError(
            f"other aggregators run with {', '.join(str(n) for n, live in others.items() if live)} shards:"
            f" every aggregator needs the same ENERLINK_AGGREGATE_SHARDS ({shards} here); stop them first"
        )
    for old in others:
        row = await (
            await conn.execute("select pg_try_advisory_xact_lock(%s)", (await layout_key(conn, old),))
        ).fetchone()
        if not (row and row[0]):
            raise LayoutBusy(f"a job of the {old} shards before still runs; {shards} shards wait for it")
    if others:
        log.warning("aggregate: the fleet was in %s shards; now %d", sorted(others), shards)
        await conn.execute(f"delete from {_LEASES} where shards <> %(n)s".encode(), params)
        await conn.execute(  # the state rows of the shards of other layouts: name.K/N, N another number
            f"delete from {_WATERMARKS} where name ~ '[.][0-9]+/[0-9]+$'"
            " and name !~ ('/' || %(n)s || '$')".encode(),
            params,
        )
    if shards > 1:
        await conn.execute(
            f"insert into {_LEASES} (shard, shards) select g, %(n)s from generate_series(0, %(n)s - 1) g"
            " on conflict (shard) do nothing".encode(),
            params,
        )


async def layout_is(conn: Conn, shards: int) -> bool:
    """Whether the deployment's shards are still ``shards`` (a job checks under its layout lock)."""
    cur = await conn.execute(f"select count(*) from {_LEASES} where shards = %s".encode(), (shards,))
    row = await cur.fetchone()
    return bool(row and row[0] == shards)
