"""``archive_manifest``: one row per archived (table, month), written in the same transaction that
drops the month's rows, so a month is either in PostgreSQL or in the manifest (and the store)."""

from __future__ import annotations

# Fixed SQL: this migration creates exactly this, on every database, for ever.
STATEMENTS: tuple[str, ...] = (
    (
        '\ncreate table if not exists "archive_manifest" (\n  table_name text not null,\n  year integer not '
        "null,\n  month integer not null check (month between 1 and 12),\n  object_key text not null,\n  "
        "backend text not null,\n  location text not null,\n  row_count bigint not null,\n  size_bytes "
        "bigint not null,\n  sha256 text not null,\n  first_at timestamptz,\n  last_at timestamptz,\n  "
        "schema_version integer not null,\n  columns text[] not null,\n  archived_at timestamptz not null "
        "default now(),\n  primary key (table_name, year, month)\n)"
    ),
)


def statements() -> list[str]:
    return list(STATEMENTS)
