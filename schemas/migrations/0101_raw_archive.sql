-- Raw readings in the archive (archiver/raw_export.py): one row per Parquet object of a meter group's
-- UTC hour (part 0 when the hour closed, parts 1.. for readings that arrived later), recorded only
-- once the object is written and read back; and the export's one-row state.
create table if not exists "raw_archive_manifest" (
  day date not null,
  grp smallint not null check (grp >= 0),
  hour smallint not null check (hour between 0 and 23),
  part integer not null check (part >= 0),
  object_key text not null unique,
  backend text not null,
  location text not null,
  row_count bigint not null,
  size_bytes bigint not null,
  sha256 text not null,
  first_at timestamptz,
  last_at timestamptz,
  meters text[] not null,
  schema_version integer not null,
  archived_at timestamptz not null default now(),
  primary key (day, grp, hour, part)
);
create table if not exists "raw_export_state" (
  id boolean primary key default true check (id),
  through timestamptz not null,
  late_cursor bigint not null default 0,
  updated_at timestamptz not null default now()
);
