"""``archive_manifest``: one row per archived (table, month), written in the same transaction that
drops the month's rows, so a month is either in PostgreSQL or in the manifest (and the store)."""

from __future__ import annotations

from schemas.wire import Tables


def statements() -> list[str]:
    table = '"' + Tables.ARCHIVE_MANIFEST + '"'
    return [
        f"""
create table if not exists {table} (
  table_name text not null,
  year integer not null,
  month integer not null check (month between 1 and 12),
  object_key text not null,
  backend text not null,
  location text not null,
  row_count bigint not null,
  size_bytes bigint not null,
  sha256 text not null,
  first_at timestamptz,
  last_at timestamptz,
  schema_version integer not null,
  columns text[] not null,
  archived_at timestamptz not null default now(),
  primary key (table_name, year, month)
)"""
    ]
