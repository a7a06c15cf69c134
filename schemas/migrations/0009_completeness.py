"""Completeness of each meter's readings, from the ``seq`` numbers of its data messages.

Minute rows of ``telemetry_aggregates`` gain ``seq_first`` and ``seq_last`` (the ``seq`` of the
minute's first and last snapshot that carries one; null when none does, as with meters whose
firmware sends no ``seq``) and ``repaired_count`` (snapshots of the minute stored from a meter's
re-sent readings; null in rows written before this migration). Rows written before read as unknown
completeness. The rollups are not widened: completeness is computed from the minute rows
(enerlink/completeness.py).
"""

from __future__ import annotations

# Fixed SQL: this migration creates exactly this, on every database, for ever.
STATEMENTS: tuple[str, ...] = (
    (
        'alter table "telemetry_aggregates" add column "seq_first" bigint, add column "seq_last" bigint, '
        'add column "repaired_count" smallint'
    ),
)


def statements() -> list[str]:
    return list(STATEMENTS)
