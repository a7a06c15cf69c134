-- Month partitions whose primary key the archiver has rebuilt full (archiver/packing.py), with the
-- index's file node right after the rebuild: a partition re-created (a restore) or rebuilt since no
-- longer matches and is packed again.
create table if not exists "packed_keys" (
  partition text primary key,
  filenode oid not null,
  bytes_before bigint not null,
  bytes_after bigint not null,
  packed_at timestamptz not null default now()
);
