"""Ingest throughput against the broker's own ceiling, measured in the same run.

    .venv/bin/python bench/ingest.py [--messages 20000] [--meters 1000] [--window 100]

It starts its own Mosquitto from the project configuration (free loopback port), then publishes the
same fleet stream (data messages at QoS 2, ``--window`` in flight) twice:

a) to ``mosquitto_sub -q 2`` (the broker ceiling: how fast the broker delivers the stream to a QoS 2
   subscriber that does nothing), timed from the first publish to the last message received;
b) to one ``enerlink ingest`` worker (a subprocess, fresh session), timed from the first publish
   until every message is in Redis.

``--own-redis`` starts a redis-server of its own, so that the CPU per message of the whole pipeline
(worker + Redis + broker, time used by each process, robust to a loaded machine) is printed too.
``--confirm both`` (the default) runs b) twice per round (in alternating order, both against the
round's ceiling), with confirmations to meters and gap repair on (seq records in the store script,
confirmations published) and off (``ENERLINK_INGEST_CONFIRM_INTERVAL_S=0``), and prints the cost of
confirming: the ratio off minus the ratio on, in points of the ceiling ratio (the median of the rounds'
differences), against the target of at most 5 points (PASS/ABOVE), and the pipeline's CPU per message
with and without, and per confirmation published (worker, broker, Redis: less noisy than the ratios, and
comparable between runs that confirmed more or less often); ``on``/``off`` run one of them. The
bench's fleet reports far faster than real meters (every 5-10 s), so the confirmation interval is
scaled to it: each meter is confirmed about once every ``--per-confirmation`` of its
messages (default 6: meters every 5 s, ``ENERLINK_INGEST_CONFIRM_INTERVAL_S`` 30 s), and the
confirmations actually published per message are printed (from the worker's metrics).

It prints both rates, their ratio, and end-to-end latency p50/p99: device datetime (stamped at
publish) to the moment the ingest announced the stored message on the live channel (published by the
same Lua script that stores it). ``--drain`` measures instead how fast a backlog queued in a
persistent session is drained (first to last message, no publisher in the loop), by
``mosquitto_sub -q 2 -c`` and by the worker. Redis: ``ENERLINK_REDIS_URL`` (default local), under a key prefix
of its own that is deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import hiredis
import orjson
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from enerlink.schemas.wire import Keys, Topics  # noqa: E402
from tests.support.chaos_stack import cpu_seconds  # noqa: E402
from tests.support.ingest_support import publisher  # noqa: E402
from tests.support.services import FIXTURES, Broker, ServiceProcess, free_port, wait_port  # noqa: E402

FIXTURE = orjson.loads((FIXTURES / "meter-data.json").read_bytes())


def _payload(meter: int, seq: int) -> bytes:
    body = dict(FIXTURE)
    body["meterId"] = f"B{meter:05d}"
    body["seq"] = seq
    body["datetime"] = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return orjson.dumps(body)


async def _publish(url: str, topic: str, *, messages: int, meters: int, window: int) -> float:
    """Publish the stream; returns the monotonic time of the first publish."""
    async with publisher(url, window=window) as pub:
        started = time.monotonic()
        await pub.many((topic, _payload(i % meters, i // meters)) for i in range(messages))
    return started


async def broker_ceiling(broker: Broker, topic: str, *, messages: int, meters: int, window: int) -> float:
    argv = ["mosquitto_sub", "-p", str(broker.port), "-q", "2", "-t", topic, "-C", str(messages)]
    sub = await asyncio.create_subprocess_exec(*argv, "-i", "bench-sub", stdout=asyncio.subprocess.DEVNULL)
    await asyncio.sleep(0.5)  # let it subscribe
    started = await _publish(broker.url, topic, messages=messages, meters=meters, window=window)
    await sub.wait()
    return messages / (time.monotonic() - started)


async def drain_ceiling(broker: Broker, topic: str, *, messages: int, meters: int, window: int) -> float:
    """``--drain``: how fast ``mosquitto_sub -q 2`` resuming its session receives a queued backlog."""
    # MQTT 3.1.1: Mosquitto 2.0.11 sends a resumed session more than its Receive Maximum, which
    # libmosquitto's MQTT 5 client treats as a protocol error (the overshoot enerlink.ingest.mqtt_source caps)
    argv = ["mosquitto_sub", "-p", str(broker.port), "-q", "2", "-t", topic, "-V", "mqttv311", "-c"]
    argv += ["-i", f"bench-drain-{uuid.uuid4().hex[:6]}"]
    created = await asyncio.create_subprocess_exec(*argv, "-E")  # the session and its subscription
    await created.wait()
    await _publish(broker.url, topic, messages=messages, meters=meters, window=window)
    sub = await asyncio.create_subprocess_exec(
        *argv, "-C", str(messages), "-F", "%U", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await sub.communicate()
    stamps = [float(line) for line in out.split()]
    return (messages - 1) / (stamps[-1] - stamps[0])


async def ingest_rate(
    broker: Broker,
    redis_url: str,
    *,
    messages: int,
    meters: int,
    window: int,
    drain: bool = False,
    confirm_interval_s: float = 0.0,
    pids: dict[str, int] | None = None,
) -> tuple[float, list[float], dict[str, float], float]:
    """Live: publish to a running worker. ``drain``: queue the stream while the worker is down (its
    session kept), restart it, time first to last stored. Returns the rate, the latencies, the CPU seconds
    of each process and the confirmations published (0 when ``confirm_interval_s`` is 0: off)."""
    confirm = confirm_interval_s > 0
    metrics_port = free_port()
    tag = uuid.uuid4().hex[:8]
    topics, keys = Topics(f"bench{tag}/enerlink"), Keys(f"bench{tag}:telemetry")
    env = {
        "ENERLINK_MQTT_URL": broker.url,
        "ENERLINK_REDIS_URL": redis_url,
        "ENERLINK_TOPIC_PREFIX": topics.prefix,
        "ENERLINK_KEY_PREFIX": keys.prefix,
        "ENERLINK_INGEST_CLIENT_ID": f"bench-ingest-{tag}",
        "ENERLINK_LOG_LEVEL": "WARNING",
        # the bench's fleet reports 5-20 times per second per meter (real meters: every 5 s), which a
        # per-meter limit of readings per second would cut; the limit is measured by its own test
        "ENERLINK_INGEST_METER_RATE": "0",
        "ENERLINK_INGEST_CONFIRM_INTERVAL_S": f"{confirm_interval_s:.3f}",
        "ENERLINK_INGEST_METRICS_PORT": str(metrics_port),
    }
    worker = ServiceProcess(args=["ingest"], env=env).start()
    client = aioredis.Redis.from_url(redis_url)
    try:
        # the listener is a process of its own: in this one it would slow the publisher down
        listener = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--listen",
            redis_url,
            keys.live_channel,
            str(messages),
            stdout=asyncio.subprocess.PIPE,
        )
        assert listener.stdout is not None
        assert await listener.stdout.readline() == b"ready\n"
        async with publisher(broker.url) as pub:  # wait until the worker's subscription is live
            while not await client.hexists(keys.latest_data, "PROBE"):
                body = dict(FIXTURE, meterId="PROBE", datetime=datetime.now(UTC).isoformat())
                await pub.one(topics.data, orjson.dumps(body))
                await asyncio.sleep(0.3)
        if drain:
            worker.kill()  # the session (and its subscription) stays; the stream queues in it
            await _publish(broker.url, topics.data, messages=messages, meters=meters, window=window)
            worker = ServiceProcess(args=["ingest"], env=env).start()  # resumes the session
            out, _ = await asyncio.wait_for(listener.communicate(), timeout=600)
            arrivals = orjson.loads(out)
            return (messages - 1) / (arrivals[-1][0] - arrivals[0][0]), [], {}, 0.0
        assert worker.process is not None
        pids = {"worker": worker.process.pid, **(pids or {})}
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        started = await _publish(broker.url, topics.data, messages=messages, meters=meters, window=window)
        started_wall = time.time() - (time.monotonic() - started)  # the first publish, wall clock
        out, _ = await asyncio.wait_for(listener.communicate(), timeout=600)
        arrivals = orjson.loads(out)
        rate = messages / (arrivals[-1][0] - started_wall)
        latencies = [(now - _epoch(stamp)) * 1000 for now, stamp in arrivals]
        if confirm:  # CPU until every meter is confirmed (the rate above is until every message is stored)
            while await client.zcard(keys.confirm_due):  # noqa: ASYNC110 (polling Redis)
                await asyncio.sleep(0.1)
        cpu_s = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        confirmations = await _confirmations(metrics_port) if confirm else 0.0
    finally:
        worker.kill()
        keys_left = [k async for k in client.scan_iter(match=f"{keys.prefix}:*", count=1000)]
        if keys_left:
            await client.delete(*keys_left)
        await client.aclose()
    return rate, latencies, cpu_s, confirmations


async def _confirmations(port: int) -> float:
    """The worker's count of confirmations published, from its metrics endpoint."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
    body = await reader.read()
    writer.close()
    for line in body.decode().splitlines():
        if line.startswith("enerlink_ingest_confirmations_total "):
            return float(line.split()[1])
    raise RuntimeError("the worker reports no enerlink_ingest_confirmations_total")


def _own_redis() -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    wait_port(port)
    return f"redis://127.0.0.1:{port}/0", process


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


async def listen(redis_url: str, channel: str, count: int) -> None:
    """``--listen``: stamp each stored-message announcement; print [[arrival, datetime], ...] at the end.

    A bare RESP connection read by hiredis (C): each read is stamped once and the messages parsed
    after the run, so the measurement takes as little CPU from the worker as it can.
    """
    url = urlparse(redis_url)
    reader, writer = await asyncio.open_connection(url.hostname or "127.0.0.1", url.port or 6379)
    writer.write(hiredis.pack_command(("SUBSCRIBE", channel)))  # type: ignore[arg-type]  # 1-tuples only in the stub
    await writer.drain()
    parser = hiredis.Reader()
    while (reply := parser.gets()) is False:
        parser.feed(await reader.read(65536))
    assert reply[0] == b"subscribe", reply
    print("ready", flush=True)
    arrivals: list[tuple[float, bytes]] = []
    while len(arrivals) < count:
        data = await reader.read(1 << 20)
        if not data:
            raise RuntimeError("Redis closed the live channel")
        now = time.time()
        parser.feed(data)
        while (reply := parser.gets()) is not False:
            if reply[0] == b"message" and b'"PROBE"' not in reply[2]:
                arrivals.append((now, reply[2]))
    writer.close()
    out = [(now, orjson.loads(data)["datetime"]) for now, data in arrivals[:count]]
    sys.stdout.write(orjson.dumps(out).decode())


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else float("nan")


TARGET_POINTS = 5.0  # the most confirming may cost, in points of the ceiling ratio


async def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--listen":
        await listen(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    # the load generator keeps --window publishes queued on purpose; aiomqtt warns about each one
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--meters", type=int, default=1_000)
    parser.add_argument("--window", type=int, default=100, help="publisher QoS 2 messages in flight")
    parser.add_argument(
        "--drain",
        action="store_true",
        help="backlog drain instead of live: the stream is queued in a persistent session first, "
        "then mosquitto_sub / the worker resume it (timed first to last message; no publisher in the loop)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="ceiling/ingest pairs, alternated (the machine's load varies)"
    )
    parser.add_argument(
        "--confirm",
        choices=("both", "on", "off"),
        default="both",
        help="confirmations to meters (and gap repair) on, off, or both in each round (their cost)",
    )
    parser.add_argument(
        "--per-confirmation",
        type=float,
        default=6.0,
        help="messages of a meter per confirmation to it (real meters every 5 s, confirmations every 30 s: "
        "6); the confirmation interval is scaled to the bench's fleet accordingly",
    )
    parser.add_argument(
        "--own-redis",
        action="store_true",
        help="start a redis-server of the bench's own, so its CPU per message is measured too",
    )
    args = parser.parse_args()
    redis_url = os.environ.get("ENERLINK_REDIS_URL", "redis://127.0.0.1:6379/0")
    print(f"messages           {args.messages} from {args.meters} meters, QoS 2, window {args.window}")
    broker = Broker().start()
    assert broker.process is not None
    pids = {"broker": broker.process.pid}
    own_redis = None
    if args.own_redis:
        redis_url, own_redis = _own_redis()
        pids["redis"] = own_redis.pid
    modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.confirm]
    ratios: dict[bool, list[float]] = {mode: [] for mode in modes}
    cpus: dict[bool, list[dict[str, float]]] = {mode: [] for mode in modes}
    per_message: list[float] = []  # confirmations published per message
    try:
        kw = {"messages": args.messages, "meters": args.meters, "window": args.window}
        for n in range(1, args.rounds + 1):
            measure = drain_ceiling if args.drain else broker_ceiling
            ceiling = await measure(broker, f"bench/ceiling{n}/meters/data", **kw)
            label = f" (round {n})" if args.rounds > 1 else ""
            what = "draining a backlog " if args.drain else ""
            print(f"broker ceiling     {ceiling:,.0f} msg/s {what}(mosquitto_sub -q 2){label}")
            # a meter's messages arrive every meters / ceiling seconds: confirm it every so many of them
            interval_s = max(0.05, args.per_confirmation * args.meters / ceiling)
            for confirm in modes if n % 2 else modes[::-1]:  # alternating order: drift hits both alike
                rate, latencies, cpu_s, confirmations = await ingest_rate(
                    broker,
                    redis_url,
                    drain=args.drain,
                    confirm_interval_s=interval_s if confirm else 0.0,
                    pids=pids,
                    **kw,
                )
                ratios[confirm].append(rate / ceiling)
                tag = "confirmations " + ("on" if confirm else "off")
                print(f"ingest (1 worker)  {rate:,.0f} msg/s stored in Redis, {tag}")
                print(f"ratio              {rate / ceiling:.0%} of the ceiling, {tag}")
                if confirm:
                    per_message.append(confirmations / args.messages)
                    print(
                        f"confirmations      {confirmations:,.0f} published (one per "
                        f"{args.messages / max(confirmations, 1):.1f} messages; interval {interval_s:.2f} s)"
                    )
                if args.drain:
                    continue
                worker_s = cpu_s["worker"]
                print(
                    f"worker CPU         {worker_s * 1e6 / args.messages:.0f} us per message "
                    f"(capacity about {args.messages / max(worker_s, 1e-9):,.0f} msg/s on one core)"
                )
                per = {name: s * 1e6 / args.messages for name, s in cpu_s.items()}
                cpus[confirm].append(per)
                parts = ", ".join(f"{name} {us:.0f}" for name, us in per.items())
                print(f"pipeline CPU       {sum(per.values()):.0f} us per message ({parts})")
                print(
                    f"latency            p50 {_pct(latencies, 50):.1f} ms, p99 {_pct(latencies, 99):.1f} ms "
                    "(device datetime -> stored)"
                )
    finally:
        broker.stop()
        if own_redis is not None:
            own_redis.kill()
            own_redis.wait()
    _summary(ratios, cpus, per_message, rounds=args.rounds)


def _summary(
    ratios: dict[bool, list[float]],
    cpus: dict[bool, list[dict[str, float]]],
    per_message: list[float],
    *,
    rounds: int,
) -> None:
    """Medians over the rounds; with both modes, the cost of confirming against its target."""
    print(f"--- medians over {rounds} round(s)")
    for mode, values in ratios.items():
        state = "on " if mode else "off"
        print(f"ratio, confirmations {state}   {statistics.median(values):.1%} of the ceiling")
    if per_message:
        value = statistics.median(per_message)
        print(f"confirmations per message  {value:.2f} (one per {1 / max(value, 1e-9):.1f} messages)")
    for mode, samples in cpus.items():
        if samples:
            state = "on " if mode else "off"
            parts = {name: statistics.median(s[name] for s in samples) for name in samples[0]}
            total = statistics.median(sum(s.values()) for s in samples)
            detail = ", ".join(f"{name} {us:.1f}" for name, us in parts.items())
            print(f"CPU, confirmations {state}     {total:.1f} us per message ({detail})")
    if len(ratios) != 2:
        return
    # each round's on and off against the same round's ceiling
    costs = [100 * (off - on) for on, off in zip(ratios[True], ratios[False], strict=True)]
    cost = statistics.median(costs)
    verdict = "PASS" if cost <= TARGET_POINTS else "ABOVE"
    print(
        f"cost of confirming         {cost:+.1f} points of the ceiling ratio (off - on; rounds: "
        f"{', '.join(f'{c:+.1f}' for c in costs)}); target <= {TARGET_POINTS:.0f}: {verdict}"
    )
    if cpus[True] and cpus[False]:
        pairs = zip(cpus[True], cpus[False], strict=True)
        diffs = [sum(on.values()) - sum(off.values()) for on, off in pairs]
        off_total = statistics.median(sum(s.values()) for s in cpus[False])
        diff = statistics.median(diffs)
        print(
            f"CPU of confirming          {diff:+.1f} us per message = {diff / off_total:+.1%} of the "
            f"pipeline's CPU without (rounds: {', '.join(f'{d:+.1f}' for d in diffs)})"
        )
        # the same per confirmation published: the rounds confirm more often when the worker is slower
        # (the interval is scaled to the ceiling), so this is the figure to compare between runs
        per = [d / max(c, 1e-9) for d, c in zip(diffs, per_message, strict=True)]
        parts = {
            name: statistics.median(
                (on[name] - off[name]) / max(c, 1e-9)
                for on, off, c in zip(cpus[True], cpus[False], per_message, strict=True)
            )
            for name in cpus[True][0]
        }
        detail = ", ".join(f"{name} {us:+.0f}" for name, us in parts.items())
        print(
            f"CPU per confirmation       {statistics.median(per):+.0f} us ({detail}; rounds: "
            f"{', '.join(f'{p:+.0f}' for p in per)})"
        )


if __name__ == "__main__":
    asyncio.run(main())
