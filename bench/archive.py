"""Archive throughput and memory: ``enerlink archive --once`` against ``psql \\copy | gzip``.

Fills one month partition of ``telemetry_aggregates`` with N random rows (every statistic column
filled) in a fresh schema, then, in the same run:

* baseline: ``psql -c "\\copy (select * from <partition>) to stdout (format csv, header)" | gzip -6``
  into /dev/null, the raw COPY + gzip rate;
* archive: ``enerlink archive --once`` as a subprocess (local-folder backend, or moto's S3 server
  with ``--s3``): COPY -> gzip -> store -> read-back verification -> manifest + drop.

Prints both rates, the ratio (aim: >= 0.5) and the archive process's peak RSS (aim: flat as N
grows; pass several sizes, e.g. ``--rows 200000,1000000``).

    .venv/bin/python bench/archive.py                  # N = 2,000,000
    .venv/bin/python bench/archive.py --rows 100000,500000 --s3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from enerlink.archiver.months import Month  # noqa: E402
from enerlink.db import migrate  # noqa: E402
from enerlink.schemas.wire import Tables  # noqa: E402
from tests.support.aggdata import fill_month  # noqa: E402

DEFAULT_URL = os.environ.get("ENERLINK_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _run_measured(
    args: list[str], *, env: dict[str, str] | None = None, shell: bool = False
) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (kB) of the process (the shell's children included for a pipeline), output."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(args, env=env, shell=shell, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
        out.seek(0)
        text = out.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{args} failed ({proc.returncode}):\n{text[-3000:]}")
    return seconds, usage.ru_maxrss, text


def bench(rows: int, *, url: str, s3: str | None) -> dict[str, float]:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'create schema "{schema}"')
    sep = "&" if "?" in url else "?"
    schema_url = f"{url}{sep}options=-csearch_path%3D{schema}"
    try:
        asyncio.run(migrate(schema_url))
        month = Month(datetime.now(UTC).year - 2, 3)  # whole and older than the 365-day retention
        started = time.monotonic()
        inserted = fill_month(schema_url, start=month.start, rows=rows)
        fill_s = time.monotonic() - started
        partition = Tables.month_partition(Tables.TELEMETRY_AGGREGATES, month.year, month.month)
        with psycopg.connect(schema_url, autocommit=True) as conn:
            conn.execute(f'vacuum analyze "{partition}"')
            size = conn.execute("select pg_total_relation_size(%s)", (partition,)).fetchone()
        print(
            f"N={inserted:,}: filled {partition} in {fill_s:.1f} s ({(size or [0])[0] / 1e6:,.0f} MB on disk)"
        )

        copy = f'\\copy (select * from "{schema}"."{partition}") to stdout with (format csv, header)'
        raw_s, _, _ = _baseline(url, copy)

        with tempfile.TemporaryDirectory() as archive_dir:
            env = {
                **os.environ,
                "ENERLINK_DATABASE_URL": schema_url,
                "ENERLINK_ARCHIVE_DIR": archive_dir,
                "ENERLINK_LOG_LEVEL": "INFO",
            }
            if s3:
                env.update(
                    ENERLINK_MINIO_ENDPOINT=s3,
                    ENERLINK_MINIO_ACCESS_KEY="bench",
                    ENERLINK_MINIO_SECRET_KEY="bench",
                    ENERLINK_MINIO_BUCKET=f"bench-{uuid.uuid4().hex[:8]}",
                )
            archive_s, rss_kb, log = _run_measured(
                [sys.executable, "-m", "enerlink", "archive", "--once"], env=env
            )
        match = re.search(
            r"archived \S+ \S+: (\d+) rows, ([\d.]+) MB csv -> ([\d.]+) MB gz in ([\d.]+) s", log
        )
        if not match or int(match.group(1)) != inserted:
            raise SystemExit(f"archive did not archive {inserted} rows:\n{log[-3000:]}")
        raw_mb, gz_mb, month_s = float(match.group(2)), float(match.group(3)), float(match.group(4))
        result = {
            "rows": inserted,
            "raw_mb": raw_mb,
            "gz_mb": gz_mb,
            "baseline_s": raw_s,
            "archive_s": archive_s,
            "month_s": month_s,
            "rss_mb": rss_kb / 1024,
        }
        base_rate, arch_rate = inserted / raw_s, inserted / archive_s
        line = "  {:<29}: {:6.1f} s {:10,.0f} rows/s {:6.1f} MB/s"
        print(line.format("baseline psql \\copy | gzip -6", raw_s, base_rate, raw_mb / raw_s))
        print(line.format("enerlink archive --once", archive_s, arch_rate, raw_mb / archive_s))
        print(
            f"  (month {month_s:.1f} s; {raw_mb:,.0f} MB csv -> {gz_mb:,.0f} MB gz, read back and verified)"
        )
        print(f"  ratio archive/baseline       : {arch_rate / base_rate:.2f}  (aim >= 0.50)")
        print(f"  archive peak RSS             : {rss_kb / 1024:.0f} MB")
        return result
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'drop schema "{schema}" cascade')


def _baseline(url: str, copy: str) -> tuple[float, int, str]:
    return _run_measured(["bash", "-c", f"psql '{url}' -X -q -c '{copy}' | gzip -6 > /dev/null"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="2000000", help="N, or several comma-separated (default 2,000,000)")
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument(
        "--s3", action="store_true", help="archive to moto's S3 server through the minio client"
    )
    args = parser.parse_args()
    sizes = [int(n.replace("_", "")) for n in args.rows.split(",")]
    server = None
    endpoint = None
    if args.s3:
        from moto.server import ThreadedMotoServer

        from tests.support.services import free_port

        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        endpoint = f"127.0.0.1:{port}"
    try:
        results = [bench(n, url=args.database_url, s3=endpoint) for n in sizes]
    finally:
        if server:
            server.stop()
    if len(results) > 1:
        rss = [r["rss_mb"] for r in results]
        print(
            f"peak RSS across N={[int(r['rows']) for r in results]}: {[round(x) for x in rss]} MB"
            f" (max/min {max(rss) / min(rss):.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
