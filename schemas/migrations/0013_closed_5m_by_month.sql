-- 0013: the complete 5-minute buckets (telemetry_aggregates_5m_closed) partitioned by UTC month, as
-- the minute table is, so that the archiver's nightly run packs a month's primary key once the month
-- is over (archiver/packing.py). Columns, types and rows stay as they are; the views over the table
-- are made again with the text migration 0012 gave them.
-- Fixed text: it never changes with the code.

drop view "telemetry_aggregates_1h";
drop view "telemetry_aggregates_1d";
drop view "telemetry_aggregates_5m";

alter table "telemetry_aggregates_5m_closed" rename to "telemetry_aggregates_5m_closed_old";
alter index "telemetry_aggregates_5m_closed_pkey" rename to "telemetry_aggregates_5m_closed_old_pkey";
create table "telemetry_aggregates_5m_closed" (like "telemetry_aggregates_5m_closed_old" including defaults)
  partition by range (bucket);
select "enerlink_ensure_month_partition"('telemetry_aggregates_5m_closed', m)
from (
  select distinct date_trunc('month', bucket at time zone 'UTC') at time zone 'UTC' as m
  from "telemetry_aggregates_5m_closed_old"
  union
  select distinct date_trunc('month', bucket at time zone 'UTC') at time zone 'UTC'
  from "telemetry_aggregates_5m_open"
  union
  select m at time zone 'UTC' from generate_series(
    date_trunc('month', now() at time zone 'UTC') - interval '1 month',
    date_trunc('month', now() at time zone 'UTC') + interval '3 months', interval '1 month') as m
) months;
insert into "telemetry_aggregates_5m_closed"
select * from "telemetry_aggregates_5m_closed_old" order by meter_id, bucket;
alter table "telemetry_aggregates_5m_closed" add constraint "telemetry_aggregates_5m_closed_pkey" primary key (meter_id, bucket);
drop table "telemetry_aggregates_5m_closed_old";
analyze "telemetry_aggregates_5m_closed";

create view "telemetry_aggregates_5m" as
select
  "bucket", "first_at", "last_at", "export_daily_energy_last", "export_total_energy_last",
  "export_settlement_energy_last", "import_daily_energy_last", "import_total_energy_last",
  "import_settlement_energy_last", "load_smart_mtr_daily_energy_last",
  "load_smart_mtr_total_energy_last", "load_home_daily_energy_last", "load_home_total_energy_last",
  "solar_input_daily_energy_last", "solar_input_total_energy_last",
  "solar_output_daily_energy_last", "solar_output_total_energy_last", "export_energy_10uwh",
  "import_energy_10uwh", "load_smart_mtr_energy_10uwh", "load_home_energy_10uwh",
  "solar_input_energy_10uwh", "solar_output_energy_10uwh", "battery_voltage_avg",
  "battery_voltage_min", "battery_voltage_max", "battery_soc_avg", "battery_soc_min",
  "battery_soc_max", "battery_charge_rate_avg", "battery_charge_rate_min",
  "battery_charge_rate_max", "battery_estimated_capacity_last", "export_voltage_avg",
  "export_voltage_min", "export_voltage_max", "export_current_avg", "export_power_avg",
  "export_power_min", "export_power_max", "import_voltage_avg", "import_voltage_min",
  "import_voltage_max", "import_current_avg", "import_power_avg", "import_power_min",
  "import_power_max", "load_smart_mtr_voltage_avg", "load_smart_mtr_voltage_min",
  "load_smart_mtr_voltage_max", "load_smart_mtr_current_avg", "load_smart_mtr_power_avg",
  "load_smart_mtr_power_min", "load_smart_mtr_power_max", "load_home_voltage_avg",
  "load_home_voltage_min", "load_home_voltage_max", "load_home_current_avg", "load_home_power_avg",
  "load_home_power_min", "load_home_power_max", "solar_input_voltage_avg",
  "solar_input_voltage_min", "solar_input_voltage_max", "solar_input_current_avg",
  "solar_input_power_avg", "solar_input_power_min", "solar_input_power_max",
  "solar_output_voltage_avg", "solar_output_voltage_min", "solar_output_voltage_max",
  "solar_output_current_avg", "solar_output_power_avg", "solar_output_power_min",
  "solar_output_power_max", "net_solar_load_power_min", "net_solar_load_power_max",
  "net_solar_net_power_min", "net_solar_net_power_max", "net_grid_net_power_min",
  "net_grid_net_power_max", "net_solar_status_last", "net_grid_status_last", "sample_count",
  "battery_alert_threshold_last", "battery_is_charging_count", "battery_alert_active_count",
  "battery_connected_count", "battery_valid_count", "export_active_count", "import_active_count",
  "solar_input_generating_count", "solar_output_generating_count", "meter_id"
from "telemetry_aggregates_5m_closed"
union all
select
  "bucket", "first_at", "last_at", "export_daily_energy_last", "export_total_energy_last",
  "export_settlement_energy_last", "import_daily_energy_last", "import_total_energy_last",
  "import_settlement_energy_last", "load_smart_mtr_daily_energy_last",
  "load_smart_mtr_total_energy_last", "load_home_daily_energy_last", "load_home_total_energy_last",
  "solar_input_daily_energy_last", "solar_input_total_energy_last",
  "solar_output_daily_energy_last", "solar_output_total_energy_last", "export_energy_10uwh",
  "import_energy_10uwh", "load_smart_mtr_energy_10uwh", "load_home_energy_10uwh",
  "solar_input_energy_10uwh", "solar_output_energy_10uwh", "battery_voltage_avg",
  "battery_voltage_min", "battery_voltage_max", "battery_soc_avg", "battery_soc_min",
  "battery_soc_max", "battery_charge_rate_avg", "battery_charge_rate_min",
  "battery_charge_rate_max", "battery_estimated_capacity_last", "export_voltage_avg",
  "export_voltage_min", "export_voltage_max", "export_current_avg", "export_power_avg",
  "export_power_min", "export_power_max", "import_voltage_avg", "import_voltage_min",
  "import_voltage_max", "import_current_avg", "import_power_avg", "import_power_min",
  "import_power_max", "load_smart_mtr_voltage_avg", "load_smart_mtr_voltage_min",
  "load_smart_mtr_voltage_max", "load_smart_mtr_current_avg", "load_smart_mtr_power_avg",
  "load_smart_mtr_power_min", "load_smart_mtr_power_max", "load_home_voltage_avg",
  "load_home_voltage_min", "load_home_voltage_max", "load_home_current_avg", "load_home_power_avg",
  "load_home_power_min", "load_home_power_max", "solar_input_voltage_avg",
  "solar_input_voltage_min", "solar_input_voltage_max", "solar_input_current_avg",
  "solar_input_power_avg", "solar_input_power_min", "solar_input_power_max",
  "solar_output_voltage_avg", "solar_output_voltage_min", "solar_output_voltage_max",
  "solar_output_current_avg", "solar_output_power_avg", "solar_output_power_min",
  "solar_output_power_max", "net_solar_load_power_min", "net_solar_load_power_max",
  "net_solar_net_power_min", "net_solar_net_power_max", "net_grid_net_power_min",
  "net_grid_net_power_max", "net_solar_status_last", "net_grid_status_last", "sample_count",
  "battery_alert_threshold_last", "battery_is_charging_count", "battery_alert_active_count",
  "battery_connected_count", "battery_valid_count", "export_active_count", "import_active_count",
  "solar_input_generating_count", "solar_output_generating_count", "meter_id"
from "telemetry_aggregates_5m_open";

create view "telemetry_aggregates_1h" as
select p.meter_id, p.b as bucket,
  sum(p."sample_count")::int as "sample_count",
  min(p."first_at") as "first_at",
  max(p."last_at") as "last_at",
  (array_agg(p."export_daily_energy_last" order by p.last_at desc))[1] as "export_daily_energy_last",
  (array_agg(p."export_total_energy_last" order by p.last_at desc))[1] as "export_total_energy_last",
  (array_agg(p."export_settlement_energy_last" order by p.last_at desc))[1] as "export_settlement_energy_last",
  (array_agg(p."import_daily_energy_last" order by p.last_at desc))[1] as "import_daily_energy_last",
  (array_agg(p."import_total_energy_last" order by p.last_at desc))[1] as "import_total_energy_last",
  (array_agg(p."import_settlement_energy_last" order by p.last_at desc))[1] as "import_settlement_energy_last",
  (array_agg(p."load_smart_mtr_daily_energy_last" order by p.last_at desc))[1] as "load_smart_mtr_daily_energy_last",
  (array_agg(p."load_smart_mtr_total_energy_last" order by p.last_at desc))[1] as "load_smart_mtr_total_energy_last",
  (array_agg(p."load_home_daily_energy_last" order by p.last_at desc))[1] as "load_home_daily_energy_last",
  (array_agg(p."load_home_total_energy_last" order by p.last_at desc))[1] as "load_home_total_energy_last",
  (array_agg(p."solar_input_daily_energy_last" order by p.last_at desc))[1] as "solar_input_daily_energy_last",
  (array_agg(p."solar_input_total_energy_last" order by p.last_at desc))[1] as "solar_input_total_energy_last",
  (array_agg(p."solar_output_daily_energy_last" order by p.last_at desc))[1] as "solar_output_daily_energy_last",
  (array_agg(p."solar_output_total_energy_last" order by p.last_at desc))[1] as "solar_output_total_energy_last",
  sum(p."export_energy_10uwh")::bigint as "export_energy_10uwh",
  sum(p."import_energy_10uwh")::bigint as "import_energy_10uwh",
  sum(p."load_smart_mtr_energy_10uwh")::bigint as "load_smart_mtr_energy_10uwh",
  sum(p."load_home_energy_10uwh")::bigint as "load_home_energy_10uwh",
  sum(p."solar_input_energy_10uwh")::bigint as "solar_input_energy_10uwh",
  sum(p."solar_output_energy_10uwh")::bigint as "solar_output_energy_10uwh",
  (sum(p."battery_voltage_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "battery_voltage_avg",
  min(p."battery_voltage_min") as "battery_voltage_min",
  max(p."battery_voltage_max") as "battery_voltage_max",
  (sum(p."battery_soc_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "battery_soc_avg",
  min(p."battery_soc_min") as "battery_soc_min",
  max(p."battery_soc_max") as "battery_soc_max",
  (sum(p."battery_charge_rate_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "battery_charge_rate_avg",
  min(p."battery_charge_rate_min") as "battery_charge_rate_min",
  max(p."battery_charge_rate_max") as "battery_charge_rate_max",
  (array_agg(p."battery_estimated_capacity_last" order by p.last_at desc))[1] as "battery_estimated_capacity_last",
  (sum(p."export_voltage_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "export_voltage_avg",
  min(p."export_voltage_min") as "export_voltage_min",
  max(p."export_voltage_max") as "export_voltage_max",
  (sum(p."export_current_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "export_current_avg",
  (sum(p."export_power_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "export_power_avg",
  min(p."export_power_min") as "export_power_min",
  max(p."export_power_max") as "export_power_max",
  (sum(p."import_voltage_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "import_voltage_avg",
  min(p."import_voltage_min") as "import_voltage_min",
  max(p."import_voltage_max") as "import_voltage_max",
  (sum(p."import_current_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "import_current_avg",
  (sum(p."import_power_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "import_power_avg",
  min(p."import_power_min") as "import_power_min",
  max(p."import_power_max") as "import_power_max",
  (sum(p."load_smart_mtr_voltage_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "load_smart_mtr_voltage_avg",
  min(p."load_smart_mtr_voltage_min") as "load_smart_mtr_voltage_min",
  max(p."load_smart_mtr_voltage_max") as "load_smart_mtr_voltage_max",
  (sum(p."load_smart_mtr_current_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "load_smart_mtr_current_avg",
  (sum(p."load_smart_mtr_power_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "load_smart_mtr_power_avg",
  min(p."load_smart_mtr_power_min") as "load_smart_mtr_power_min",
  max(p."load_smart_mtr_power_max") as "load_smart_mtr_power_max",
  (sum(p."load_home_voltage_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "load_home_voltage_avg",
  min(p."load_home_voltage_min") as "load_home_voltage_min",
  max(p."load_home_voltage_max") as "load_home_voltage_max",
  (sum(p."load_home_current_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "load_home_current_avg",
  (sum(p."load_home_power_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "load_home_power_avg",
  min(p."load_home_power_min") as "load_home_power_min",
  max(p."load_home_power_max") as "load_home_power_max",
  (sum(p."solar_input_voltage_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "solar_input_voltage_avg",
  min(p."solar_input_voltage_min") as "solar_input_voltage_min",
  max(p."solar_input_voltage_max") as "solar_input_voltage_max",
  (sum(p."solar_input_current_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "solar_input_current_avg",
  (sum(p."solar_input_power_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "solar_input_power_avg",
  min(p."solar_input_power_min") as "solar_input_power_min",
  max(p."solar_input_power_max") as "solar_input_power_max",
  (sum(p."solar_output_voltage_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "solar_output_voltage_avg",
  min(p."solar_output_voltage_min") as "solar_output_voltage_min",
  max(p."solar_output_voltage_max") as "solar_output_voltage_max",
  (sum(p."solar_output_current_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "solar_output_current_avg",
  (sum(p."solar_output_power_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "solar_output_power_avg",
  min(p."solar_output_power_min") as "solar_output_power_min",
  max(p."solar_output_power_max") as "solar_output_power_max",
  min(p."net_solar_load_power_min") as "net_solar_load_power_min",
  max(p."net_solar_load_power_max") as "net_solar_load_power_max",
  min(p."net_solar_net_power_min") as "net_solar_net_power_min",
  max(p."net_solar_net_power_max") as "net_solar_net_power_max",
  min(p."net_grid_net_power_min") as "net_grid_net_power_min",
  max(p."net_grid_net_power_max") as "net_grid_net_power_max",
  (array_agg(p."battery_alert_threshold_last" order by p.last_at desc))[1] as "battery_alert_threshold_last",
  sum(p."battery_is_charging_count")::integer as "battery_is_charging_count",
  sum(p."battery_alert_active_count")::integer as "battery_alert_active_count",
  sum(p."battery_connected_count")::integer as "battery_connected_count",
  sum(p."battery_valid_count")::integer as "battery_valid_count",
  sum(p."export_active_count")::integer as "export_active_count",
  sum(p."import_active_count")::integer as "import_active_count",
  sum(p."solar_input_generating_count")::integer as "solar_input_generating_count",
  sum(p."solar_output_generating_count")::integer as "solar_output_generating_count",
  (array_agg(p."net_solar_status_last" order by p.last_at desc))[1] as "net_solar_status_last",
  (array_agg(p."net_grid_status_last" order by p.last_at desc))[1] as "net_grid_status_last"
from (
  select t.meter_id, t.bucket as b, t."sample_count", t."first_at", t."last_at",
    t."export_daily_energy_last", t."export_total_energy_last", t."export_settlement_energy_last", t."import_daily_energy_last", t."import_total_energy_last", t."import_settlement_energy_last", t."load_smart_mtr_daily_energy_last", t."load_smart_mtr_total_energy_last", t."load_home_daily_energy_last", t."load_home_total_energy_last", t."solar_input_daily_energy_last", t."solar_input_total_energy_last", t."solar_output_daily_energy_last", t."solar_output_total_energy_last", t."export_energy_10uwh", t."import_energy_10uwh", t."load_smart_mtr_energy_10uwh", t."load_home_energy_10uwh", t."solar_input_energy_10uwh", t."solar_output_energy_10uwh", t."battery_voltage_avg", t."battery_voltage_min", t."battery_voltage_max", t."battery_soc_avg", t."battery_soc_min", t."battery_soc_max", t."battery_charge_rate_avg", t."battery_charge_rate_min", t."battery_charge_rate_max", t."battery_estimated_capacity_last", t."export_voltage_avg", t."export_voltage_min", t."export_voltage_max", t."export_current_avg", t."export_power_avg", t."export_power_min", t."export_power_max", t."import_voltage_avg", t."import_voltage_min", t."import_voltage_max", t."import_current_avg", t."import_power_avg", t."import_power_min", t."import_power_max", t."load_smart_mtr_voltage_avg", t."load_smart_mtr_voltage_min", t."load_smart_mtr_voltage_max", t."load_smart_mtr_current_avg", t."load_smart_mtr_power_avg", t."load_smart_mtr_power_min", t."load_smart_mtr_power_max", t."load_home_voltage_avg", t."load_home_voltage_min", t."load_home_voltage_max", t."load_home_current_avg", t."load_home_power_avg", t."load_home_power_min", t."load_home_power_max", t."solar_input_voltage_avg", t."solar_input_voltage_min", t."solar_input_voltage_max", t."solar_input_current_avg", t."solar_input_power_avg", t."solar_input_power_min", t."solar_input_power_max", t."solar_output_voltage_avg", t."solar_output_voltage_min", t."solar_output_voltage_max", t."solar_output_current_avg", t."solar_output_power_avg", t."solar_output_power_min", t."solar_output_power_max", t."net_solar_load_power_min", t."net_solar_load_power_max", t."net_solar_net_power_min", t."net_solar_net_power_max", t."net_grid_net_power_min", t."net_grid_net_power_max", t."battery_alert_threshold_last", t."battery_is_charging_count", t."battery_alert_active_count", t."battery_connected_count", t."battery_valid_count", t."export_active_count", t."import_active_count", t."solar_input_generating_count", t."solar_output_generating_count", t."net_solar_status_last", t."net_grid_status_last"
  from "telemetry_aggregates_1h_folded" t
  union all
  select r.meter_id, date_bin(interval '1 hour', f.bucket, timestamptz '1970-01-01 00:00:00+00') as b, f."sample_count", f."first_at", f."last_at",
    f."export_daily_energy_last", f."export_total_energy_last", f."export_settlement_energy_last", f."import_daily_energy_last", f."import_total_energy_last", f."import_settlement_energy_last", f."load_smart_mtr_daily_energy_last", f."load_smart_mtr_total_energy_last", f."load_home_daily_energy_last", f."load_home_total_energy_last", f."solar_input_daily_energy_last", f."solar_input_total_energy_last", f."solar_output_daily_energy_last", f."solar_output_total_energy_last", f."export_energy_10uwh", f."import_energy_10uwh", f."load_smart_mtr_energy_10uwh", f."load_home_energy_10uwh", f."solar_input_energy_10uwh", f."solar_output_energy_10uwh", f."battery_voltage_avg", f."battery_voltage_min", f."battery_voltage_max", f."battery_soc_avg", f."battery_soc_min", f."battery_soc_max", f."battery_charge_rate_avg", f."battery_charge_rate_min", f."battery_charge_rate_max", f."battery_estimated_capacity_last", f."export_voltage_avg", f."export_voltage_min", f."export_voltage_max", f."export_current_avg", f."export_power_avg", f."export_power_min", f."export_power_max", f."import_voltage_avg", f."import_voltage_min", f."import_voltage_max", f."import_current_avg", f."import_power_avg", f."import_power_min", f."import_power_max", f."load_smart_mtr_voltage_avg", f."load_smart_mtr_voltage_min", f."load_smart_mtr_voltage_max", f."load_smart_mtr_current_avg", f."load_smart_mtr_power_avg", f."load_smart_mtr_power_min", f."load_smart_mtr_power_max", f."load_home_voltage_avg", f."load_home_voltage_min", f."load_home_voltage_max", f."load_home_current_avg", f."load_home_power_avg", f."load_home_power_min", f."load_home_power_max", f."solar_input_voltage_avg", f."solar_input_voltage_min", f."solar_input_voltage_max", f."solar_input_current_avg", f."solar_input_power_avg", f."solar_input_power_min", f."solar_input_power_max", f."solar_output_voltage_avg", f."solar_output_voltage_min", f."solar_output_voltage_max", f."solar_output_current_avg", f."solar_output_power_avg", f."solar_output_power_min", f."solar_output_power_max", f."net_solar_load_power_min", f."net_solar_load_power_max", f."net_solar_net_power_min", f."net_solar_net_power_max", f."net_grid_net_power_min", f."net_grid_net_power_max", f."battery_alert_threshold_last", f."battery_is_charging_count", f."battery_alert_active_count", f."battery_connected_count", f."battery_valid_count", f."export_active_count", f."import_active_count", f."solar_input_generating_count", f."solar_output_generating_count", f."net_solar_status_last", f."net_grid_status_last"
  from "rollup_fold" r
  cross join lateral (select * from "telemetry_aggregates_5m_closed" f5 where f5.meter_id = r.meter_id and f5.bucket >= r.folded_until union all select * from "telemetry_aggregates_5m_open" f5 where f5.meter_id = r.meter_id and f5.bucket >= r.folded_until) f
) p
group by p.meter_id, p.b;

create view "telemetry_aggregates_1d" as
select p.meter_id, p.b as bucket,
  sum(p."sample_count")::int as "sample_count",
  min(p."first_at") as "first_at",
  max(p."last_at") as "last_at",
  (array_agg(p."export_daily_energy_last" order by p.last_at desc))[1] as "export_daily_energy_last",
  (array_agg(p."export_total_energy_last" order by p.last_at desc))[1] as "export_total_energy_last",
  (array_agg(p."export_settlement_energy_last" order by p.last_at desc))[1] as "export_settlement_energy_last",
  (array_agg(p."import_daily_energy_last" order by p.last_at desc))[1] as "import_daily_energy_last",
  (array_agg(p."import_total_energy_last" order by p.last_at desc))[1] as "import_total_energy_last",
  (array_agg(p."import_settlement_energy_last" order by p.last_at desc))[1] as "import_settlement_energy_last",
  (array_agg(p."load_smart_mtr_daily_energy_last" order by p.last_at desc))[1] as "load_smart_mtr_daily_energy_last",
  (array_agg(p."load_smart_mtr_total_energy_last" order by p.last_at desc))[1] as "load_smart_mtr_total_energy_last",
  (array_agg(p."load_home_daily_energy_last" order by p.last_at desc))[1] as "load_home_daily_energy_last",
  (array_agg(p."load_home_total_energy_last" order by p.last_at desc))[1] as "load_home_total_energy_last",
  (array_agg(p."solar_input_daily_energy_last" order by p.last_at desc))[1] as "solar_input_daily_energy_last",
  (array_agg(p."solar_input_total_energy_last" order by p.last_at desc))[1] as "solar_input_total_energy_last",
  (array_agg(p."solar_output_daily_energy_last" order by p.last_at desc))[1] as "solar_output_daily_energy_last",
  (array_agg(p."solar_output_total_energy_last" order by p.last_at desc))[1] as "solar_output_total_energy_last",
  sum(p."export_energy_10uwh")::bigint as "export_energy_10uwh",
  sum(p."import_energy_10uwh")::bigint as "import_energy_10uwh",
  sum(p."load_smart_mtr_energy_10uwh")::bigint as "load_smart_mtr_energy_10uwh",
  sum(p."load_home_energy_10uwh")::bigint as "load_home_energy_10uwh",
  sum(p."solar_input_energy_10uwh")::bigint as "solar_input_energy_10uwh",
  sum(p."solar_output_energy_10uwh")::bigint as "solar_output_energy_10uwh",
  (sum(p."battery_voltage_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "battery_voltage_avg",
  min(p."battery_voltage_min") as "battery_voltage_min",
  max(p."battery_voltage_max") as "battery_voltage_max",
  (sum(p."battery_soc_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "battery_soc_avg",
  min(p."battery_soc_min") as "battery_soc_min",
  max(p."battery_soc_max") as "battery_soc_max",
  (sum(p."battery_charge_rate_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "battery_charge_rate_avg",
  min(p."battery_charge_rate_min") as "battery_charge_rate_min",
  max(p."battery_charge_rate_max") as "battery_charge_rate_max",
  (array_agg(p."battery_estimated_capacity_last" order by p.last_at desc))[1] as "battery_estimated_capacity_last",
  (sum(p."export_voltage_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "export_voltage_avg",
  min(p."export_voltage_min") as "export_voltage_min",
  max(p."export_voltage_max") as "export_voltage_max",
  (sum(p."export_current_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "export_current_avg",
  (sum(p."export_power_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "export_power_avg",
  min(p."export_power_min") as "export_power_min",
  max(p."export_power_max") as "export_power_max",
  (sum(p."import_voltage_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "import_voltage_avg",
  min(p."import_voltage_min") as "import_voltage_min",
  max(p."import_voltage_max") as "import_voltage_max",
  (sum(p."import_current_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "import_current_avg",
  (sum(p."import_power_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "import_power_avg",
  min(p."import_power_min") as "import_power_min",
  max(p."import_power_max") as "import_power_max",
  (sum(p."load_smart_mtr_voltage_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "load_smart_mtr_voltage_avg",
  min(p."load_smart_mtr_voltage_min") as "load_smart_mtr_voltage_min",
  max(p."load_smart_mtr_voltage_max") as "load_smart_mtr_voltage_max",
  (sum(p."load_smart_mtr_current_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "load_smart_mtr_current_avg",
  (sum(p."load_smart_mtr_power_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "load_smart_mtr_power_avg",
  min(p."load_smart_mtr_power_min") as "load_smart_mtr_power_min",
  max(p."load_smart_mtr_power_max") as "load_smart_mtr_power_max",
  (sum(p."load_home_voltage_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "load_home_voltage_avg",
  min(p."load_home_voltage_min") as "load_home_voltage_min",
  max(p."load_home_voltage_max") as "load_home_voltage_max",
  (sum(p."load_home_current_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "load_home_current_avg",
  (sum(p."load_home_power_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "load_home_power_avg",
  min(p."load_home_power_min") as "load_home_power_min",
  max(p."load_home_power_max") as "load_home_power_max",
  (sum(p."solar_input_voltage_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "solar_input_voltage_avg",
  min(p."solar_input_voltage_min") as "solar_input_voltage_min",
  max(p."solar_input_voltage_max") as "solar_input_voltage_max",
  (sum(p."solar_input_current_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "solar_input_current_avg",
  (sum(p."solar_input_power_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "solar_input_power_avg",
  min(p."solar_input_power_min") as "solar_input_power_min",
  max(p."solar_input_power_max") as "solar_input_power_max",
  (sum(p."solar_output_voltage_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "solar_output_voltage_avg",
  min(p."solar_output_voltage_min") as "solar_output_voltage_min",
  max(p."solar_output_voltage_max") as "solar_output_voltage_max",
  (sum(p."solar_output_current_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "solar_output_current_avg",
  (sum(p."solar_output_power_avg"::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::real as "solar_output_power_avg",
  min(p."solar_output_power_min") as "solar_output_power_min",
  max(p."solar_output_power_max") as "solar_output_power_max",
  min(p."net_solar_load_power_min") as "net_solar_load_power_min",
  max(p."net_solar_load_power_max") as "net_solar_load_power_max",
  min(p."net_solar_net_power_min") as "net_solar_net_power_min",
  max(p."net_solar_net_power_max") as "net_solar_net_power_max",
  min(p."net_grid_net_power_min") as "net_grid_net_power_min",
  max(p."net_grid_net_power_max") as "net_grid_net_power_max",
  (array_agg(p."battery_alert_threshold_last" order by p.last_at desc))[1] as "battery_alert_threshold_last",
  sum(p."battery_is_charging_count")::integer as "battery_is_charging_count",
  sum(p."battery_alert_active_count")::integer as "battery_alert_active_count",
  sum(p."battery_connected_count")::integer as "battery_connected_count",
  sum(p."battery_valid_count")::integer as "battery_valid_count",
  sum(p."export_active_count")::integer as "export_active_count",
  sum(p."import_active_count")::integer as "import_active_count",
  sum(p."solar_input_generating_count")::integer as "solar_input_generating_count",
  sum(p."solar_output_generating_count")::integer as "solar_output_generating_count",
  (array_agg(p."net_solar_status_last" order by p.last_at desc))[1] as "net_solar_status_last",
  (array_agg(p."net_grid_status_last" order by p.last_at desc))[1] as "net_grid_status_last"
from (
  select t.meter_id, t.bucket as b, t."sample_count", t."first_at", t."last_at",
    t."export_daily_energy_last", t."export_total_energy_last", t."export_settlement_energy_last", t."import_daily_energy_last", t."import_total_energy_last", t."import_settlement_energy_last", t."load_smart_mtr_daily_energy_last", t."load_smart_mtr_total_energy_last", t."load_home_daily_energy_last", t."load_home_total_energy_last", t."solar_input_daily_energy_last", t."solar_input_total_energy_last", t."solar_output_daily_energy_last", t."solar_output_total_energy_last", t."export_energy_10uwh", t."import_energy_10uwh", t."load_smart_mtr_energy_10uwh", t."load_home_energy_10uwh", t."solar_input_energy_10uwh", t."solar_output_energy_10uwh", t."battery_voltage_avg", t."battery_voltage_min", t."battery_voltage_max", t."battery_soc_avg", t."battery_soc_min", t."battery_soc_max", t."battery_charge_rate_avg", t."battery_charge_rate_min", t."battery_charge_rate_max", t."battery_estimated_capacity_last", t."export_voltage_avg", t."export_voltage_min", t."export_voltage_max", t."export_current_avg", t."export_power_avg", t."export_power_min", t."export_power_max", t."import_voltage_avg", t."import_voltage_min", t."import_voltage_max", t."import_current_avg", t."import_power_avg", t."import_power_min", t."import_power_max", t."load_smart_mtr_voltage_avg", t."load_smart_mtr_voltage_min", t."load_smart_mtr_voltage_max", t."load_smart_mtr_current_avg", t."load_smart_mtr_power_avg", t."load_smart_mtr_power_min", t."load_smart_mtr_power_max", t."load_home_voltage_avg", t."load_home_voltage_min", t."load_home_voltage_max", t."load_home_current_avg", t."load_home_power_avg", t."load_home_power_min", t."load_home_power_max", t."solar_input_voltage_avg", t."solar_input_voltage_min", t."solar_input_voltage_max", t."solar_input_current_avg", t."solar_input_power_avg", t."solar_input_power_min", t."solar_input_power_max", t."solar_output_voltage_avg", t."solar_output_voltage_min", t."solar_output_voltage_max", t."solar_output_current_avg", t."solar_output_power_avg", t."solar_output_power_min", t."solar_output_power_max", t."net_solar_load_power_min", t."net_solar_load_power_max", t."net_solar_net_power_min", t."net_solar_net_power_max", t."net_grid_net_power_min", t."net_grid_net_power_max", t."battery_alert_threshold_last", t."battery_is_charging_count", t."battery_alert_active_count", t."battery_connected_count", t."battery_valid_count", t."export_active_count", t."import_active_count", t."solar_input_generating_count", t."solar_output_generating_count", t."net_solar_status_last", t."net_grid_status_last"
  from "telemetry_aggregates_1d_folded" t
  union all
  select r.meter_id, (date_trunc('day', f.bucket at time zone z.timezone) at time zone z.timezone) as b, f."sample_count", f."first_at", f."last_at",
    f."export_daily_energy_last", f."export_total_energy_last", f."export_settlement_energy_last", f."import_daily_energy_last", f."import_total_energy_last", f."import_settlement_energy_last", f."load_smart_mtr_daily_energy_last", f."load_smart_mtr_total_energy_last", f."load_home_daily_energy_last", f."load_home_total_energy_last", f."solar_input_daily_energy_last", f."solar_input_total_energy_last", f."solar_output_daily_energy_last", f."solar_output_total_energy_last", f."export_energy_10uwh", f."import_energy_10uwh", f."load_smart_mtr_energy_10uwh", f."load_home_energy_10uwh", f."solar_input_energy_10uwh", f."solar_output_energy_10uwh", f."battery_voltage_avg", f."battery_voltage_min", f."battery_voltage_max", f."battery_soc_avg", f."battery_soc_min", f."battery_soc_max", f."battery_charge_rate_avg", f."battery_charge_rate_min", f."battery_charge_rate_max", f."battery_estimated_capacity_last", f."export_voltage_avg", f."export_voltage_min", f."export_voltage_max", f."export_current_avg", f."export_power_avg", f."export_power_min", f."export_power_max", f."import_voltage_avg", f."import_voltage_min", f."import_voltage_max", f."import_current_avg", f."import_power_avg", f."import_power_min", f."import_power_max", f."load_smart_mtr_voltage_avg", f."load_smart_mtr_voltage_min", f."load_smart_mtr_voltage_max", f."load_smart_mtr_current_avg", f."load_smart_mtr_power_avg", f."load_smart_mtr_power_min", f."load_smart_mtr_power_max", f."load_home_voltage_avg", f."load_home_voltage_min", f."load_home_voltage_max", f."load_home_current_avg", f."load_home_power_avg", f."load_home_power_min", f."load_home_power_max", f."solar_input_voltage_avg", f."solar_input_voltage_min", f."solar_input_voltage_max", f."solar_input_current_avg", f."solar_input_power_avg", f."solar_input_power_min", f."solar_input_power_max", f."solar_output_voltage_avg", f."solar_output_voltage_min", f."solar_output_voltage_max", f."solar_output_current_avg", f."solar_output_power_avg", f."solar_output_power_min", f."solar_output_power_max", f."net_solar_load_power_min", f."net_solar_load_power_max", f."net_solar_net_power_min", f."net_solar_net_power_max", f."net_grid_net_power_min", f."net_grid_net_power_max", f."battery_alert_threshold_last", f."battery_is_charging_count", f."battery_alert_active_count", f."battery_connected_count", f."battery_valid_count", f."export_active_count", f."import_active_count", f."solar_input_generating_count", f."solar_output_generating_count", f."net_solar_status_last", f."net_grid_status_last"
  from "rollup_fold" r cross join "rollup_state" z
  cross join lateral (select * from "telemetry_aggregates_5m_closed" f5 where f5.meter_id = r.meter_id and f5.bucket >= r.folded_until union all select * from "telemetry_aggregates_5m_open" f5 where f5.meter_id = r.meter_id and f5.bucket >= r.folded_until) f
) p
group by p.meter_id, p.b;
