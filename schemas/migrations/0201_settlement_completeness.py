"""Settlements record the completeness of their period's readings when they become final
(``enerlink/settlements.py``): expected (from ``seq``), received, repaired and still missing;
null when unknown (meters without ``seq``, and rows finalized before this migration)."""

from __future__ import annotations

from schemas.wire import Tables


def statements() -> list[str]:
    return [
        f'alter table "{Tables.SETTLEMENTS}" add column "readings_expected" bigint,'
        ' add column "readings_received" bigint, add column "readings_repaired" bigint,'
        ' add column "readings_missing" bigint'
    ]
