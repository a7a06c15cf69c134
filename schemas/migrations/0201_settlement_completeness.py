"""Settlements record the completeness of their period's readings when they become final
(``settlement/records.py``): expected (from ``seq``), received, repaired and still missing;
null when unknown (meters without ``seq``, and rows finalized before this migration)."""

from __future__ import annotations

# Fixed SQL: this migration creates exactly this, on every database, for ever.
STATEMENTS: tuple[str, ...] = (
    (
        'alter table "settlements" add column "readings_expected" bigint, add column "readings_received" '
        'bigint, add column "readings_repaired" bigint, add column "readings_missing" bigint'
    ),
)


def statements() -> list[str]:
    return list(STATEMENTS)
