-- Aggregator shards: the fleet is cut into `shards` parts by a hash of the meter id, and each part
-- is leased to one aggregator process at a time. A lease not renewed before `expires_at` may be
-- taken by another process. The processes alive renew a row each in "aggregator_members": how many
-- share the shards.
create table if not exists "aggregator_leases" (
  shard integer primary key check (shard >= 0),
  shards integer not null check (shards > shard),
  owner text,
  expires_at timestamptz not null default now(),
  acquired_at timestamptz
);
create table if not exists "aggregator_members" (
  owner text primary key,
  expires_at timestamptz not null
);
-- The shard of a meter: the first 28 bits of the MD5 of its id, modulo the number of shards.
create or replace function "enerlink_shard_of"(meter_id text, shards integer) returns integer
language sql immutable strict parallel safe
as $$ select (('x' || substr(md5(meter_id), 1, 7))::bit(28)::integer) % shards $$;
