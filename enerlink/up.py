"""``enerlink up``: the whole pipeline in one process, the embedded default for one box or a demo.

A simulated fleet, the ingest, the aggregator, the archiver and the API run side by side in one
``asyncio.TaskGroup``, each with the settings it would read on its own, plus the live console that
prints one line per data message as it reaches the broker, and, with ``ENERLINK_HA_DISCOVERY=true``,
the Home Assistant bridge (:mod:`enerlink.hass.service`). SIGTERM/Ctrl-C drains them all.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
from collections.abc import Coroutine
from typing import Any

import enerlink.aggregator.service
import enerlink.api.service
import enerlink.archiver.service
import enerlink.edge.service
import enerlink.hass.service
import enerlink.ingest.service
from enerlink import console
from enerlink.aggregator.settings import Settings as AggregatorSettings
from enerlink.api.settings import Settings as ApiSettings
from enerlink.archiver.settings import Settings as ArchiverSettings
from enerlink.config import CommonSettings, Env
from enerlink.db import migrate
from enerlink.edge.settings import Settings as EdgeSettings
from enerlink.hass.settings import Settings as HassSettings
from enerlink.ingest.settings import Settings as IngestSettings
from enerlink.runtime import configure_logging, run_service

log = logging.getLogger(__name__)
ONE_PASS_SETTLE_S = 2.0  # ``--once``: what the ingest has to store the meters' step once it is sent


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--meters", type=int, default=3, help="simulated meters (default 3; 0 = none)")
    parser.add_argument("--interval", type=float, default=None, help="seconds between data messages")
    parser.add_argument("--no-console", action="store_true", help="do not print the live console lines")
    parser.add_argument(
        "--idle", action="store_true", help="the simulated meters start stopped (POST /simulation/start)"
    )
    parser.add_argument("--no-api", action="store_true", help="do not serve the HTTP API")
    parser.add_argument("--port", type=int, default=None, help="API port (ENERLINK_API_PORT, default 8000)")
    parser.add_argument(
        "--once",
        action="store_true",
        help="one pass: the meters publish one step, the ingest stores it, then one aggregation and one"
        " archive run (complete minutes only), and exit",
    )


async def run_all(args: argparse.Namespace) -> None:

    env = Env()
    edge_settings = dataclasses.replace(
        EdgeSettings.from_env(env), meters=args.meters, console=False, idle=args.idle
    )
    if args.interval is not None:
        edge_settings = dataclasses.replace(edge_settings, interval_s=args.interval)
    api_settings = ApiSettings.from_env(env)
    if args.port is not None:
        api_settings = dataclasses.replace(api_settings, port=args.port)
    ingest_settings = IngestSettings.from_env(env)
    hass_settings = HassSettings.from_env(env)
    common = ingest_settings.common
    await migrate(common.database_url)  # once, before the services that share the schema start
    log.info(
        "up: %d simulated meters -> %r -> %s -> %s; API on http://%s:%d/",
        args.meters,
        common.mqtt,
        common.redis_url,
        common.database_url.split("@")[-1],
        api_settings.host,
        api_settings.port,
    )
    if args.once:
        await _one_pass(args, env, edge_settings=edge_settings, ingest_settings=ingest_settings)
        return
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as group:

        def start(name: str, service: Coroutine[Any, Any, object]) -> None:
            group.create_task(service, name=name).add_done_callback(_report_stopped)

        start("ingest", enerlink.ingest.service.run(ingest_settings, ready=ready))
        start("aggregator", enerlink.aggregator.service.run(AggregatorSettings.from_env(env)))
        start("archiver", enerlink.archiver.service.run(ArchiverSettings.from_env(env)))
        if not args.no_api:
            start("api", enerlink.api.service.run(api_settings))
        if not args.no_console:
            start("console", console.run(common))
        if hass_settings.enabled:
            hass_ready = asyncio.Event()
            start("hass", enerlink.hass.service.run(hass_settings, ready=hass_ready))
            await hass_ready.wait()
        await ready.wait()  # meters start once the ingest's subscription is in place
        if args.meters > 0:
            start("edge", enerlink.edge.service.run(edge_settings))


async def _one_pass(
    args: argparse.Namespace, env: Env, *, edge_settings: EdgeSettings, ingest_settings: IngestSettings
) -> None:
    """``--once``: the services one after the other, in the pipeline's order. What the meters' one step
    sent is at the broker once the edge returns; the ingest, subscribed before, has
    :data:`ONE_PASS_SETTLE_S` to take it, then stops (what it has not read by then stays in its broker
    session for the next run)."""
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        # bounded (no broker or Redis within its time limit: an error), not ended by a quiet second
        bounded = enerlink.ingest.service.run(ingest_settings, once=True, idle_s=60.0, ready=ready)
        ingest = group.create_task(bounded, name="ingest")
        await ready.wait()
        if args.meters > 0:
            await group.create_task(enerlink.edge.service.run(edge_settings, once=True), name="edge")
        await asyncio.sleep(ONE_PASS_SETTLE_S)
        ingest.cancel()
    await enerlink.aggregator.service.run(AggregatorSettings.from_env(env), once=True)
    await enerlink.archiver.service.run(ArchiverSettings.from_env(env), once=True)
    log.info("up: one pass done")


def _report_stopped(task: asyncio.Task[Any]) -> None:
    """One line per service as it finishes its drain (a failure is reported by the task group)."""
    if task.cancelled() or task.exception() is None:
        log.info("up: %s stopped", task.get_name())


def main(args: argparse.Namespace) -> int:

    common = CommonSettings.from_env(Env())
    configure_logging(common.log_level, common.log_format)
    return run_service(lambda: run_all(args), name="up", grace_s=20.0)
