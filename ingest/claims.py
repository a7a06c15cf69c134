"""Claiming the meters due for a confirmation (``confirm_claim.lua``), per part of the key layout.

On a Redis Cluster a reading is confirmed to its meter only once a replica of its master holds it:
Redis replicates asynchronously, and a master killed right after a write may be replaced by a replica
that never got it, while the meter deletes what is confirmed. So the claim and a ``WAIT`` go in one
pipeline on one connection to the part's master (``ENERLINK_INGEST_CONFIRM_REPLICAS``, 1 by default on a
cluster). Replication is ordered: once the replicas acknowledged the claim, they hold every earlier write
of that master, each reading about to be confirmed included.

A master counts its replicas as the cluster lists them, failed ones included (one may come back and be
promoted). A master without any, which a promoted replica is until the old master rejoins as its
replica, confirms on its own append-only file: no node could take its slots in a failover.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from enerlink.ingest.metrics import IngestMetrics
from enerlink.ingest.seq_record import script
from enerlink.ingest.settings import Settings
from enerlink.redis_client import REDIS_ERRORS, AsyncRedis, NodeClients
from enerlink.schemas.wire import Keys

log = logging.getLogger(__name__)

CLAIM_S = 30.0  # a claimed meter is due again after this if its worker never finished the round
CLAIM_BATCH = 500  # meters claimed per script call


@dataclass
class Claims:
    settings: Settings
    client: AsyncRedis
    metrics: IngestMetrics
    _short: dict[str, int] = field(default_factory=dict)  # master -> its replicas, when fewer than asked
    _lagging: set[str] = field(default_factory=set)  # masters whose replicas missed a WAIT this round

    def __post_init__(self) -> None:
        self._claim = self.client.register_script(script("confirm_claim.lua"))
        self._nodes = NodeClients(self.client)
        self._record_ttl_ms = self.settings.seq_record_ttl_s * 1000

    def new_round(self) -> None:
        """A master whose replicas missed a WAIT is skipped for the rest of a round, not waited for
        once per part."""
        self._lagging.clear()

    async def due(self, keys: Keys) -> list[Any] | None:
        """Claim the part's meters due for a confirmation: Redis' time, then (meter, record text)
        pairs. None (nothing to publish now; the claimed meters are due again after :data:`CLAIM_S`)
        when too few replicas hold the master's writes."""
        args: list[str | int] = [keys.seq_record(""), CLAIM_BATCH, int(CLAIM_S * 1000), self._record_ttl_ms]
        replicas = self.settings.replicas
        if not replicas:
            found: list[Any] = await self._claim(keys=[keys.confirm_due], args=args)
            return found
        master = self._nodes.master_name(keys.confirm_due)
        if master in self._lagging:
            return None
        try:
            have = await self._nodes.replica_count(keys.confirm_due)
            if have is not None and have < replicas:
                self._fewer_replicas(master, have)
                replicas = have
                if not replicas:
                    found = await self._claim(keys=[keys.confirm_due], args=args)
                    return found
            pipe = self._nodes.client(keys.confirm_due).pipeline(transaction=False)
            await self._claim(keys=[keys.confirm_due], args=args, client=pipe)
            pipe.execute_command("WAIT", replicas, self.settings.confirm_replicas_wait_ms)
            raw, acked = await pipe.execute()
        except REDIS_ERRORS:
            await self._nodes.forget(keys.confirm_due)  # moved or gone: ask the cluster again next round
            raise
        if int(acked) < replicas:
            self._lagging.add(master)
            self.metrics.delivery_failures.labels(stage="replicas").inc()
            log.warning(
                "delivery: %d of %d replicas hold the writes of the Redis master %s; its confirmations wait",
                int(acked),
                replicas,
                master,
            )
            return None
        found = raw
        return found

    def _fewer_replicas(self, name: str, have: int) -> None:
        """Logged once per master and count."""
        if self._short.get(name) != have:
            self._short[name] = have
            log.warning(
                "delivery: the Redis master %s has %d replica(s), fewer than %d: confirmations wait for %s",
                name,
                have,
                self.settings.replicas,
                "its append-only file only" if have == 0 else f"{have}",
            )

    async def aclose(self) -> None:
        await self._nodes.aclose()
