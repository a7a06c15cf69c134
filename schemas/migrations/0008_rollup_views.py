"""Hourly and daily rollups become views over folded tables (aggregator/fold.py).

Every job rewrote each meter's open 5-minute, hourly and daily row: three wide rows per meter and
minute, most of a minute's PostgreSQL work. The hourly and daily tables are renamed ``..._folded``
and the old names become views that add the 5-minute rows not folded yet, so readers see the same
rows as before; the aggregator now folds a fifth of the fleet's complete 5-minute rows per minute.

Existing rows hold every minute aggregated so far, so each meter's ``folded_until`` starts at the
end of its newest 5-minute bucket (minutes still to come in that bucket are merged into the folded
rows too: rows inside the folded range always are). The daily view's zone is recorded by the
aggregator at each job (``ENERLINK_TIMEZONE``); UTC until then.

The statements are fixed text, exactly what this migration created when it was written (it used
to derive them from the column catalogue, which has changed since: see migration 0010).
"""

from __future__ import annotations

STATEMENTS: tuple[str, ...] = (
    """\
alter table "telemetry_aggregates_1h" rename to "telemetry_aggregates_1h_folded\"""",
    """\
alter index "telemetry_aggregates_1h_pkey" rename to "telemetry_aggregates_1h_folded_pkey\"""",
    """\
alter table "telemetry_aggregates_1d" rename to "telemetry_aggregates_1d_folded\"""",
    """\
alter index "telemetry_aggregates_1d_pkey" rename to "telemetry_aggregates_1d_folded_pkey\"""",
    """\
create table "rollup_fold" (meter_id text primary key, phase smallint not null,\
 folded_until timestamptz not null) with (fillfactor = 50)""",
    """\
insert into "rollup_fold" (meter_id, phase, folded_until) select meter_id,\
 (('x' || left(md5(meter_id), 7))::bit(28)::int % 5)::smallint,\
 max(bucket) + interval '5 minutes' from "telemetry_aggregates_5m" group by meter_id""",
    """\
create table "rollup_state" (id boolean primary key default true check (id), timezone text not null)""",
    """\
insert into "rollup_state" (id, timezone) values (true, 'UTC')""",
    """\
create view "telemetry_aggregates_1h" as
select p.meter_id, p.b as bucket,
  sum(p."sample_count")::int as "sample_count", min(p."first_at") as "first_at",\
 max(p."last_at") as "last_at",\
 sum(p."battery_voltage_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "battery_voltage_avg", min(p."battery_voltage_min") as "battery_voltage_min",\
 max(p."battery_voltage_max") as "battery_voltage_max",\
 sum(p."battery_soc_avg" * p.sample_count) / nullif(sum(p.sample_count), 0) as "battery_soc_avg",\
 min(p."battery_soc_min") as "battery_soc_min", max(p."battery_soc_max") as "battery_soc_max",\
 sum(p."battery_charge_rate_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "battery_charge_rate_avg", min(p."battery_charge_rate_min") as "battery_charge_rate_min",\
 max(p."battery_charge_rate_max") as "battery_charge_rate_max",\
 sum(p."battery_estimated_capacity_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "battery_estimated_capacity_avg",\
 min(p."battery_estimated_capacity_min") as "battery_estimated_capacity_min",\
 max(p."battery_estimated_capacity_max") as "battery_estimated_capacity_max",\
 sum(p."battery_alert_threshold_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "battery_alert_threshold_avg",\
 min(p."battery_alert_threshold_min") as "battery_alert_threshold_min",\
 max(p."battery_alert_threshold_max") as "battery_alert_threshold_max",\
 sum(p."export_voltage_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "export_voltage_avg", min(p."export_voltage_min") as "export_voltage_min",\
 max(p."export_voltage_max") as "export_voltage_max",\
 sum(p."export_current_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "export_current_avg", min(p."export_current_min") as "export_current_min",\
 max(p."export_current_max") as "export_current_max",\
 sum(p."export_power_avg" * p.sample_count) / nullif(sum(p.sample_count), 0) as "export_power_avg",\
 min(p."export_power_min") as "export_power_min", max(p."export_power_max") as "export_power_max",\
 sum(p."export_daily_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "export_daily_energy_avg", min(p."export_daily_energy_min") as "export_daily_energy_min",\
 max(p."export_daily_energy_max") as "export_daily_energy_max",\
 sum(p."export_total_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "export_total_energy_avg", min(p."export_total_energy_min") as "export_total_energy_min",\
 max(p."export_total_energy_max") as "export_total_energy_max",\
 sum(p."export_settlement_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "export_settlement_energy_avg",\
 min(p."export_settlement_energy_min") as "export_settlement_energy_min",\
 max(p."export_settlement_energy_max") as "export_settlement_energy_max",\
 sum(p."import_voltage_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "import_voltage_avg", min(p."import_voltage_min") as "import_voltage_min",\
 max(p."import_voltage_max") as "import_voltage_max",\
 sum(p."import_current_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "import_current_avg", min(p."import_current_min") as "import_current_min",\
 max(p."import_current_max") as "import_current_max",\
 sum(p."import_power_avg" * p.sample_count) / nullif(sum(p.sample_count), 0) as "import_power_avg",\
 min(p."import_power_min") as "import_power_min", max(p."import_power_max") as "import_power_max",\
 sum(p."import_daily_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "import_daily_energy_avg", min(p."import_daily_energy_min") as "import_daily_energy_min",\
 max(p."import_daily_energy_max") as "import_daily_energy_max",\
 sum(p."import_total_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "import_total_energy_avg", min(p."import_total_energy_min") as "import_total_energy_min",\
 max(p."import_total_energy_max") as "import_total_energy_max",\
 sum(p."import_settlement_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "import_settlement_energy_avg",\
 min(p."import_settlement_energy_min") as "import_settlement_energy_min",\
 max(p."import_settlement_energy_max") as "import_settlement_energy_max",\
 sum(p."load_smart_mtr_voltage_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "load_smart_mtr_voltage_avg",\
 min(p."load_smart_mtr_voltage_min") as "load_smart_mtr_voltage_min",\
 max(p."load_smart_mtr_voltage_max") as "load_smart_mtr_voltage_max",\
 sum(p."load_smart_mtr_current_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "load_smart_mtr_current_avg",\
 min(p."load_smart_mtr_current_min") as "load_smart_mtr_current_min",\
 max(p."load_smart_mtr_current_max") as "load_smart_mtr_current_max",\
 sum(p."load_smart_mtr_power_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "load_smart_mtr_power_avg", min(p."load_smart_mtr_power_min") as "load_smart_mtr_power_min",\
 max(p."load_smart_mtr_power_max") as "load_smart_mtr_power_max",\
 sum(p."load_smart_mtr_daily_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "load_smart_mtr_daily_energy_avg",\
 min(p."load_smart_mtr_daily_energy_min") as "load_smart_mtr_daily_energy_min",\
 max(p."load_smart_mtr_daily_energy_max") as "load_smart_mtr_daily_energy_max",\
 sum(p."load_smart_mtr_total_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "load_smart_mtr_total_energy_avg",\
 min(p."load_smart_mtr_total_energy_min") as "load_smart_mtr_total_energy_min",\
 max(p."load_smart_mtr_total_energy_max") as "load_smart_mtr_total_energy_max",\
 sum(p."load_home_voltage_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "load_home_voltage_avg", min(p."load_home_voltage_min") as "load_home_voltage_min",\
 max(p."load_home_voltage_max") as "load_home_voltage_max",\
 sum(p."load_home_current_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "load_home_current_avg", min(p."load_home_current_min") as "load_home_current_min",\
 max(p."load_home_current_max") as "load_home_current_max",\
 sum(p."load_home_power_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "load_home_power_avg", min(p."load_home_power_min") as "load_home_power_min",\
 max(p."load_home_power_max") as "load_home_power_max",\
 sum(p."load_home_daily_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "load_home_daily_energy_avg",\
 min(p."load_home_daily_energy_min") as "load_home_daily_energy_min",\
 max(p."load_home_daily_energy_max") as "load_home_daily_energy_max",\
 sum(p."load_home_total_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "load_home_total_energy_avg",\
 min(p."load_home_total_energy_min") as "load_home_total_energy_min",\
 max(p."load_home_total_energy_max") as "load_home_total_energy_max",\
 sum(p."solar_input_voltage_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "solar_input_voltage_avg", min(p."solar_input_voltage_min") as "solar_input_voltage_min",\
 max(p."solar_input_voltage_max") as "solar_input_voltage_max",\
 sum(p."solar_input_current_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "solar_input_current_avg", min(p."solar_input_current_min") as "solar_input_current_min",\
 max(p."solar_input_current_max") as "solar_input_current_max",\
 sum(p."solar_input_power_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "solar_input_power_avg", min(p."solar_input_power_min") as "solar_input_power_min",\
 max(p."solar_input_power_max") as "solar_input_power_max",\
 sum(p."solar_input_daily_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "solar_input_daily_energy_avg",\
 min(p."solar_input_daily_energy_min") as "solar_input_daily_energy_min",\
 max(p."solar_input_daily_energy_max") as "solar_input_daily_energy_max",\
 sum(p."solar_input_total_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "solar_input_total_energy_avg",\
 min(p."solar_input_total_energy_min") as "solar_input_total_energy_min",\
 max(p."solar_input_total_energy_max") as "solar_input_total_energy_max",\
 sum(p."solar_output_voltage_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "solar_output_voltage_avg", min(p."solar_output_voltage_min") as "solar_output_voltage_min",\
 max(p."solar_output_voltage_max") as "solar_output_voltage_max",\
 sum(p."solar_output_current_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "solar_output_current_avg", min(p."solar_output_current_min") as "solar_output_current_min",\
 max(p."solar_output_current_max") as "solar_output_current_max",\
 sum(p."solar_output_power_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "solar_output_power_avg", min(p."solar_output_power_min") as "solar_output_power_min",\
 max(p."solar_output_power_max") as "solar_output_power_max",\
 sum(p."solar_output_daily_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "solar_output_daily_energy_avg",\
 min(p."solar_output_daily_energy_min") as "solar_output_daily_energy_min",\
 max(p."solar_output_daily_energy_max") as "solar_output_daily_energy_max",\
 sum(p."solar_output_total_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "solar_output_total_energy_avg",\
 min(p."solar_output_total_energy_min") as "solar_output_total_energy_min",\
 max(p."solar_output_total_energy_max") as "solar_output_total_energy_max",\
 sum(p."net_solar_solar_power_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_solar_solar_power_avg",\
 min(p."net_solar_solar_power_min") as "net_solar_solar_power_min",\
 max(p."net_solar_solar_power_max") as "net_solar_solar_power_max",\
 sum(p."net_solar_load_power_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_solar_load_power_avg", min(p."net_solar_load_power_min") as "net_solar_load_power_min",\
 max(p."net_solar_load_power_max") as "net_solar_load_power_max",\
 sum(p."net_solar_net_power_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_solar_net_power_avg", min(p."net_solar_net_power_min") as "net_solar_net_power_min",\
 max(p."net_solar_net_power_max") as "net_solar_net_power_max",\
 sum(p."net_solar_solar_daily_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_solar_solar_daily_avg",\
 min(p."net_solar_solar_daily_min") as "net_solar_solar_daily_min",\
 max(p."net_solar_solar_daily_max") as "net_solar_solar_daily_max",\
 sum(p."net_solar_load_daily_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_solar_load_daily_avg", min(p."net_solar_load_daily_min") as "net_solar_load_daily_min",\
 max(p."net_solar_load_daily_max") as "net_solar_load_daily_max",\
 sum(p."net_solar_net_daily_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_solar_net_daily_avg", min(p."net_solar_net_daily_min") as "net_solar_net_daily_min",\
 max(p."net_solar_net_daily_max") as "net_solar_net_daily_max",\
 sum(p."net_solar_solar_total_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_solar_solar_total_avg",\
 min(p."net_solar_solar_total_min") as "net_solar_solar_total_min",\
 max(p."net_solar_solar_total_max") as "net_solar_solar_total_max",\
 sum(p."net_solar_load_total_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_solar_load_total_avg", min(p."net_solar_load_total_min") as "net_solar_load_total_min",\
 max(p."net_solar_load_total_max") as "net_solar_load_total_max",\
 sum(p."net_solar_net_total_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_solar_net_total_avg", min(p."net_solar_net_total_min") as "net_solar_net_total_min",\
 max(p."net_solar_net_total_max") as "net_solar_net_total_max",\
 sum(p."net_grid_export_power_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_grid_export_power_avg",\
 min(p."net_grid_export_power_min") as "net_grid_export_power_min",\
 max(p."net_grid_export_power_max") as "net_grid_export_power_max",\
 sum(p."net_grid_import_power_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_grid_import_power_avg",\
 min(p."net_grid_import_power_min") as "net_grid_import_power_min",\
 max(p."net_grid_import_power_max") as "net_grid_import_power_max",\
 sum(p."net_grid_net_power_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_grid_net_power_avg", min(p."net_grid_net_power_min") as "net_grid_net_power_min",\
 max(p."net_grid_net_power_max") as "net_grid_net_power_max",\
 sum(p."net_grid_export_daily_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_grid_export_daily_avg",\
 min(p."net_grid_export_daily_min") as "net_grid_export_daily_min",\
 max(p."net_grid_export_daily_max") as "net_grid_export_daily_max",\
 sum(p."net_grid_import_daily_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_grid_import_daily_avg",\
 min(p."net_grid_import_daily_min") as "net_grid_import_daily_min",\
 max(p."net_grid_import_daily_max") as "net_grid_import_daily_max",\
 sum(p."net_grid_net_daily_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_grid_net_daily_avg", min(p."net_grid_net_daily_min") as "net_grid_net_daily_min",\
 max(p."net_grid_net_daily_max") as "net_grid_net_daily_max",\
 sum(p."net_grid_export_total_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_grid_export_total_avg",\
 min(p."net_grid_export_total_min") as "net_grid_export_total_min",\
 max(p."net_grid_export_total_max") as "net_grid_export_total_max",\
 sum(p."net_grid_import_total_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_grid_import_total_avg",\
 min(p."net_grid_import_total_min") as "net_grid_import_total_min",\
 max(p."net_grid_import_total_max") as "net_grid_import_total_max",\
 sum(p."net_grid_net_total_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_grid_net_total_avg", min(p."net_grid_net_total_min") as "net_grid_net_total_min",\
 max(p."net_grid_net_total_max") as "net_grid_net_total_max",\
 (array_agg(p."export_daily_energy_last" order by p.last_at desc))[1] as \
"export_daily_energy_last",\
 (array_agg(p."export_total_energy_last" order by p.last_at desc))[1] as \
"export_total_energy_last",\
 (array_agg(p."export_settlement_energy_last" order by p.last_at desc))[1] as \
"export_settlement_energy_last",\
 (array_agg(p."import_daily_energy_last" order by p.last_at desc))[1] as \
"import_daily_energy_last",\
 (array_agg(p."import_total_energy_last" order by p.last_at desc))[1] as \
"import_total_energy_last",\
 (array_agg(p."import_settlement_energy_last" order by p.last_at desc))[1] as \
"import_settlement_energy_last",\
 (array_agg(p."load_smart_mtr_daily_energy_last" order by p.last_at desc))[1] as \
"load_smart_mtr_daily_energy_last",\
 (array_agg(p."load_smart_mtr_total_energy_last" order by p.last_at desc))[1] as \
"load_smart_mtr_total_energy_last",\
 (array_agg(p."load_home_daily_energy_last" order by p.last_at desc))[1] as \
"load_home_daily_energy_last",\
 (array_agg(p."load_home_total_energy_last" order by p.last_at desc))[1] as \
"load_home_total_energy_last",\
 (array_agg(p."solar_input_daily_energy_last" order by p.last_at desc))[1] as \
"solar_input_daily_energy_last",\
 (array_agg(p."solar_input_total_energy_last" order by p.last_at desc))[1] as \
"solar_input_total_energy_last",\
 (array_agg(p."solar_output_daily_energy_last" order by p.last_at desc))[1] as \
"solar_output_daily_energy_last",\
 (array_agg(p."solar_output_total_energy_last" order by p.last_at desc))[1] as \
"solar_output_total_energy_last",\
 (array_agg(p."net_solar_solar_daily_last" order by p.last_at desc))[1] as \
"net_solar_solar_daily_last",\
 (array_agg(p."net_solar_load_daily_last" order by p.last_at desc))[1] as \
"net_solar_load_daily_last",\
 (array_agg(p."net_solar_solar_total_last" order by p.last_at desc))[1] as \
"net_solar_solar_total_last",\
 (array_agg(p."net_solar_load_total_last" order by p.last_at desc))[1] as \
"net_solar_load_total_last",\
 (array_agg(p."net_grid_export_daily_last" order by p.last_at desc))[1] as \
"net_grid_export_daily_last",\
 (array_agg(p."net_grid_import_daily_last" order by p.last_at desc))[1] as \
"net_grid_import_daily_last",\
 (array_agg(p."net_grid_export_total_last" order by p.last_at desc))[1] as \
"net_grid_export_total_last",\
 (array_agg(p."net_grid_import_total_last" order by p.last_at desc))[1] as \
"net_grid_import_total_last", sum(p."export_energy_wh") as "export_energy_wh",\
 sum(p."import_energy_wh") as "import_energy_wh",\
 sum(p."load_smart_mtr_energy_wh") as "load_smart_mtr_energy_wh",\
 sum(p."load_home_energy_wh") as "load_home_energy_wh",\
 sum(p."solar_input_energy_wh") as "solar_input_energy_wh",\
 sum(p."solar_output_energy_wh") as "solar_output_energy_wh",\
 sum(p."battery_is_charging_ratio" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "battery_is_charging_ratio",\
 sum(p."battery_alert_active_ratio" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "battery_alert_active_ratio",\
 sum(p."battery_connected_ratio" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "battery_connected_ratio",\
 sum(p."battery_valid_ratio" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "battery_valid_ratio",\
 sum(p."export_active_ratio" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "export_active_ratio",\
 sum(p."import_active_ratio" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "import_active_ratio",\
 sum(p."solar_input_generating_ratio" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "solar_input_generating_ratio",\
 sum(p."solar_output_generating_ratio" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "solar_output_generating_ratio",\
 (array_agg(p."net_solar_status_last" order by p.last_at desc))[1] as "net_solar_status_last",\
 (array_agg(p."net_grid_status_last" order by p.last_at desc))[1] as "net_grid_status_last"
from (
  select t.meter_id, t.bucket as b, t."sample_count", t."first_at", t."last_at",\
 t."battery_voltage_avg", t."battery_voltage_min", t."battery_voltage_max", t."battery_soc_avg",\
 t."battery_soc_min", t."battery_soc_max", t."battery_charge_rate_avg",\
 t."battery_charge_rate_min", t."battery_charge_rate_max", t."battery_estimated_capacity_avg",\
 t."battery_estimated_capacity_min", t."battery_estimated_capacity_max",\
 t."battery_alert_threshold_avg", t."battery_alert_threshold_min", t."battery_alert_threshold_max",\
 t."export_voltage_avg", t."export_voltage_min", t."export_voltage_max", t."export_current_avg",\
 t."export_current_min", t."export_current_max", t."export_power_avg", t."export_power_min",\
 t."export_power_max", t."export_daily_energy_avg", t."export_daily_energy_min",\
 t."export_daily_energy_max", t."export_total_energy_avg", t."export_total_energy_min",\
 t."export_total_energy_max", t."export_settlement_energy_avg", t."export_settlement_energy_min",\
 t."export_settlement_energy_max", t."import_voltage_avg", t."import_voltage_min",\
 t."import_voltage_max", t."import_current_avg", t."import_current_min", t."import_current_max",\
 t."import_power_avg", t."import_power_min", t."import_power_max", t."import_daily_energy_avg",\
 t."import_daily_energy_min", t."import_daily_energy_max", t."import_total_energy_avg",\
 t."import_total_energy_min", t."import_total_energy_max", t."import_settlement_energy_avg",\
 t."import_settlement_energy_min", t."import_settlement_energy_max",\
 t."load_smart_mtr_voltage_avg", t."load_smart_mtr_voltage_min", t."load_smart_mtr_voltage_max",\
 t."load_smart_mtr_current_avg", t."load_smart_mtr_current_min", t."load_smart_mtr_current_max",\
 t."load_smart_mtr_power_avg", t."load_smart_mtr_power_min", t."load_smart_mtr_power_max",\
 t."load_smart_mtr_daily_energy_avg", t."load_smart_mtr_daily_energy_min",\
 t."load_smart_mtr_daily_energy_max", t."load_smart_mtr_total_energy_avg",\
 t."load_smart_mtr_total_energy_min", t."load_smart_mtr_total_energy_max",\
 t."load_home_voltage_avg", t."load_home_voltage_min", t."load_home_voltage_max",\
 t."load_home_current_avg", t."load_home_current_min", t."load_home_current_max",\
 t."load_home_power_avg", t."load_home_power_min", t."load_home_power_max",\
 t."load_home_daily_energy_avg", t."load_home_daily_energy_min", t."load_home_daily_energy_max",\
 t."load_home_total_energy_avg", t."load_home_total_energy_min", t."load_home_total_energy_max",\
 t."solar_input_voltage_avg", t."solar_input_voltage_min", t."solar_input_voltage_max",\
 t."solar_input_current_avg", t."solar_input_current_min", t."solar_input_current_max",\
 t."solar_input_power_avg", t."solar_input_power_min", t."solar_input_power_max",\
 t."solar_input_daily_energy_avg", t."solar_input_daily_energy_min",\
 t."solar_input_daily_energy_max", t."solar_input_total_energy_avg",\
 t."solar_input_total_energy_min", t."solar_input_total_energy_max", t."solar_output_voltage_avg",\
 t."solar_output_voltage_min", t."solar_output_voltage_max", t."solar_output_current_avg",\
 t."solar_output_current_min", t."solar_output_current_max", t."solar_output_power_avg",\
 t."solar_output_power_min", t."solar_output_power_max", t."solar_output_daily_energy_avg",\
 t."solar_output_daily_energy_min", t."solar_output_daily_energy_max",\
 t."solar_output_total_energy_avg", t."solar_output_total_energy_min",\
 t."solar_output_total_energy_max", t."net_solar_solar_power_avg", t."net_solar_solar_power_min",\
 t."net_solar_solar_power_max", t."net_solar_load_power_avg", t."net_solar_load_power_min",\
 t."net_solar_load_power_max", t."net_solar_net_power_avg", t."net_solar_net_power_min",\
 t."net_solar_net_power_max", t."net_solar_solar_daily_avg", t."net_solar_solar_daily_min",\
 t."net_solar_solar_daily_max", t."net_solar_load_daily_avg", t."net_solar_load_daily_min",\
 t."net_solar_load_daily_max", t."net_solar_net_daily_avg", t."net_solar_net_daily_min",\
 t."net_solar_net_daily_max", t."net_solar_solar_total_avg", t."net_solar_solar_total_min",\
 t."net_solar_solar_total_max", t."net_solar_load_total_avg", t."net_solar_load_total_min",\
 t."net_solar_load_total_max", t."net_solar_net_total_avg", t."net_solar_net_total_min",\
 t."net_solar_net_total_max", t."net_grid_export_power_avg", t."net_grid_export_power_min",\
 t."net_grid_export_power_max", t."net_grid_import_power_avg", t."net_grid_import_power_min",\
 t."net_grid_import_power_max", t."net_grid_net_power_avg", t."net_grid_net_power_min",\
 t."net_grid_net_power_max", t."net_grid_export_daily_avg", t."net_grid_export_daily_min",\
 t."net_grid_export_daily_max", t."net_grid_import_daily_avg", t."net_grid_import_daily_min",\
 t."net_grid_import_daily_max", t."net_grid_net_daily_avg", t."net_grid_net_daily_min",\
 t."net_grid_net_daily_max", t."net_grid_export_total_avg", t."net_grid_export_total_min",\
 t."net_grid_export_total_max", t."net_grid_import_total_avg", t."net_grid_import_total_min",\
 t."net_grid_import_total_max", t."net_grid_net_total_avg", t."net_grid_net_total_min",\
 t."net_grid_net_total_max", t."export_daily_energy_last", t."export_total_energy_last",\
 t."export_settlement_energy_last", t."import_daily_energy_last", t."import_total_energy_last",\
 t."import_settlement_energy_last", t."load_smart_mtr_daily_energy_last",\
 t."load_smart_mtr_total_energy_last", t."load_home_daily_energy_last",\
 t."load_home_total_energy_last", t."solar_input_daily_energy_last",\
 t."solar_input_total_energy_last", t."solar_output_daily_energy_last",\
 t."solar_output_total_energy_last", t."net_solar_solar_daily_last", t."net_solar_load_daily_last",\
 t."net_solar_solar_total_last", t."net_solar_load_total_last", t."net_grid_export_daily_last",\
 t."net_grid_import_daily_last", t."net_grid_export_total_last", t."net_grid_import_total_last",\
 t."export_energy_wh", t."import_energy_wh", t."load_smart_mtr_energy_wh", t."load_home_energy_wh",\
 t."solar_input_energy_wh", t."solar_output_energy_wh", t."battery_is_charging_ratio",\
 t."battery_alert_active_ratio", t."battery_connected_ratio", t."battery_valid_ratio",\
 t."export_active_ratio", t."import_active_ratio", t."solar_input_generating_ratio",\
 t."solar_output_generating_ratio", t."net_solar_status_last", t."net_grid_status_last"
  from "telemetry_aggregates_1h_folded" t
  union all
  select r.meter_id, date_bin(interval '1 hour', f.bucket,\
 timestamptz '1970-01-01 00:00:00+00') as b, f."sample_count", f."first_at", f."last_at",\
 f."battery_voltage_avg", f."battery_voltage_min", f."battery_voltage_max", f."battery_soc_avg",\
 f."battery_soc_min", f."battery_soc_max", f."battery_charge_rate_avg",\
 f."battery_charge_rate_min", f."battery_charge_rate_max", f."battery_estimated_capacity_avg",\
 f."battery_estimated_capacity_min", f."battery_estimated_capacity_max",\
 f."battery_alert_threshold_avg", f."battery_alert_threshold_min", f."battery_alert_threshold_max",\
 f."export_voltage_avg", f."export_voltage_min", f."export_voltage_max", f."export_current_avg",\
 f."export_current_min", f."export_current_max", f."export_power_avg", f."export_power_min",\
 f."export_power_max", f."export_daily_energy_avg", f."export_daily_energy_min",\
 f."export_daily_energy_max", f."export_total_energy_avg", f."export_total_energy_min",\
 f."export_total_energy_max", f."export_settlement_energy_avg", f."export_settlement_energy_min",\
 f."export_settlement_energy_max", f."import_voltage_avg", f."import_voltage_min",\
 f."import_voltage_max", f."import_current_avg", f."import_current_min", f."import_current_max",\
 f."import_power_avg", f."import_power_min", f."import_power_max", f."import_daily_energy_avg",\
 f."import_daily_energy_min", f."import_daily_energy_max", f."import_total_energy_avg",\
 f."import_total_energy_min", f."import_total_energy_max", f."import_settlement_energy_avg",\
 f."import_settlement_energy_min", f."import_settlement_energy_max",\
 f."load_smart_mtr_voltage_avg", f."load_smart_mtr_voltage_min", f."load_smart_mtr_voltage_max",\
 f."load_smart_mtr_current_avg", f."load_smart_mtr_current_min", f."load_smart_mtr_current_max",\
 f."load_smart_mtr_power_avg", f."load_smart_mtr_power_min", f."load_smart_mtr_power_max",\
 f."load_smart_mtr_daily_energy_avg", f."load_smart_mtr_daily_energy_min",\
 f."load_smart_mtr_daily_energy_max", f."load_smart_mtr_total_energy_avg",\
 f."load_smart_mtr_total_energy_min", f."load_smart_mtr_total_energy_max",\
 f."load_home_voltage_avg", f."load_home_voltage_min", f."load_home_voltage_max",\
 f."load_home_current_avg", f."load_home_current_min", f."load_home_current_max",\
 f."load_home_power_avg", f."load_home_power_min", f."load_home_power_max",\
 f."load_home_daily_energy_avg", f."load_home_daily_energy_min", f."load_home_daily_energy_max",\
 f."load_home_total_energy_avg", f."load_home_total_energy_min", f."load_home_total_energy_max",\
 f."solar_input_voltage_avg", f."solar_input_voltage_min", f."solar_input_voltage_max",\
 f."solar_input_current_avg", f."solar_input_current_min", f."solar_input_current_max",\
 f."solar_input_power_avg", f."solar_input_power_min", f."solar_input_power_max",\
 f."solar_input_daily_energy_avg", f."solar_input_daily_energy_min",\
 f."solar_input_daily_energy_max", f."solar_input_total_energy_avg",\
 f."solar_input_total_energy_min", f."solar_input_total_energy_max", f."solar_output_voltage_avg",\
 f."solar_output_voltage_min", f."solar_output_voltage_max", f."solar_output_current_avg",\
 f."solar_output_current_min", f."solar_output_current_max", f."solar_output_power_avg",\
 f."solar_output_power_min", f."solar_output_power_max", f."solar_output_daily_energy_avg",\
 f."solar_output_daily_energy_min", f."solar_output_daily_energy_max",\
 f."solar_output_total_energy_avg", f."solar_output_total_energy_min",\
 f."solar_output_total_energy_max", f."net_solar_solar_power_avg", f."net_solar_solar_power_min",\
 f."net_solar_solar_power_max", f."net_solar_load_power_avg", f."net_solar_load_power_min",\
 f."net_solar_load_power_max", f."net_solar_net_power_avg", f."net_solar_net_power_min",\
 f."net_solar_net_power_max", f."net_solar_solar_daily_avg", f."net_solar_solar_daily_min",\
 f."net_solar_solar_daily_max", f."net_solar_load_daily_avg", f."net_solar_load_daily_min",\
 f."net_solar_load_daily_max", f."net_solar_net_daily_avg", f."net_solar_net_daily_min",\
 f."net_solar_net_daily_max", f."net_solar_solar_total_avg", f."net_solar_solar_total_min",\
 f."net_solar_solar_total_max", f."net_solar_load_total_avg", f."net_solar_load_total_min",\
 f."net_solar_load_total_max", f."net_solar_net_total_avg", f."net_solar_net_total_min",\
 f."net_solar_net_total_max", f."net_grid_export_power_avg", f."net_grid_export_power_min",\
 f."net_grid_export_power_max", f."net_grid_import_power_avg", f."net_grid_import_power_min",\
 f."net_grid_import_power_max", f."net_grid_net_power_avg", f."net_grid_net_power_min",\
 f."net_grid_net_power_max", f."net_grid_export_daily_avg", f."net_grid_export_daily_min",\
 f."net_grid_export_daily_max", f."net_grid_import_daily_avg", f."net_grid_import_daily_min",\
 f."net_grid_import_daily_max", f."net_grid_net_daily_avg", f."net_grid_net_daily_min",\
 f."net_grid_net_daily_max", f."net_grid_export_total_avg", f."net_grid_export_total_min",\
 f."net_grid_export_total_max", f."net_grid_import_total_avg", f."net_grid_import_total_min",\
 f."net_grid_import_total_max", f."net_grid_net_total_avg", f."net_grid_net_total_min",\
 f."net_grid_net_total_max", f."export_daily_energy_last", f."export_total_energy_last",\
 f."export_settlement_energy_last", f."import_daily_energy_last", f."import_total_energy_last",\
 f."import_settlement_energy_last", f."load_smart_mtr_daily_energy_last",\
 f."load_smart_mtr_total_energy_last", f."load_home_daily_energy_last",\
 f."load_home_total_energy_last", f."solar_input_daily_energy_last",\
 f."solar_input_total_energy_last", f."solar_output_daily_energy_last",\
 f."solar_output_total_energy_last", f."net_solar_solar_daily_last", f."net_solar_load_daily_last",\
 f."net_solar_solar_total_last", f."net_solar_load_total_last", f."net_grid_export_daily_last",\
 f."net_grid_import_daily_last", f."net_grid_export_total_last", f."net_grid_import_total_last",\
 f."export_energy_wh", f."import_energy_wh", f."load_smart_mtr_energy_wh", f."load_home_energy_wh",\
 f."solar_input_energy_wh", f."solar_output_energy_wh", f."battery_is_charging_ratio",\
 f."battery_alert_active_ratio", f."battery_connected_ratio", f."battery_valid_ratio",\
 f."export_active_ratio", f."import_active_ratio", f."solar_input_generating_ratio",\
 f."solar_output_generating_ratio", f."net_solar_status_last", f."net_grid_status_last"
  from "rollup_fold" r
  cross join lateral (select * from "telemetry_aggregates_5m" f5
    where f5.meter_id = r.meter_id and f5.bucket >= r.folded_until) f
) p
group by p.meter_id, p.b""",
    """\
create view "telemetry_aggregates_1d" as
select p.meter_id, p.b as bucket,
  sum(p."sample_count")::int as "sample_count", min(p."first_at") as "first_at",\
 max(p."last_at") as "last_at",\
 sum(p."battery_voltage_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "battery_voltage_avg", min(p."battery_voltage_min") as "battery_voltage_min",\
 max(p."battery_voltage_max") as "battery_voltage_max",\
 sum(p."battery_soc_avg" * p.sample_count) / nullif(sum(p.sample_count), 0) as "battery_soc_avg",\
 min(p."battery_soc_min") as "battery_soc_min", max(p."battery_soc_max") as "battery_soc_max",\
 sum(p."battery_charge_rate_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "battery_charge_rate_avg", min(p."battery_charge_rate_min") as "battery_charge_rate_min",\
 max(p."battery_charge_rate_max") as "battery_charge_rate_max",\
 sum(p."battery_estimated_capacity_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "battery_estimated_capacity_avg",\
 min(p."battery_estimated_capacity_min") as "battery_estimated_capacity_min",\
 max(p."battery_estimated_capacity_max") as "battery_estimated_capacity_max",\
 sum(p."battery_alert_threshold_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "battery_alert_threshold_avg",\
 min(p."battery_alert_threshold_min") as "battery_alert_threshold_min",\
 max(p."battery_alert_threshold_max") as "battery_alert_threshold_max",\
 sum(p."export_voltage_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "export_voltage_avg", min(p."export_voltage_min") as "export_voltage_min",\
 max(p."export_voltage_max") as "export_voltage_max",\
 sum(p."export_current_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "export_current_avg", min(p."export_current_min") as "export_current_min",\
 max(p."export_current_max") as "export_current_max",\
 sum(p."export_power_avg" * p.sample_count) / nullif(sum(p.sample_count), 0) as "export_power_avg",\
 min(p."export_power_min") as "export_power_min", max(p."export_power_max") as "export_power_max",\
 sum(p."export_daily_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "export_daily_energy_avg", min(p."export_daily_energy_min") as "export_daily_energy_min",\
 max(p."export_daily_energy_max") as "export_daily_energy_max",\
 sum(p."export_total_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "export_total_energy_avg", min(p."export_total_energy_min") as "export_total_energy_min",\
 max(p."export_total_energy_max") as "export_total_energy_max",\
 sum(p."export_settlement_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "export_settlement_energy_avg",\
 min(p."export_settlement_energy_min") as "export_settlement_energy_min",\
 max(p."export_settlement_energy_max") as "export_settlement_energy_max",\
 sum(p."import_voltage_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "import_voltage_avg", min(p."import_voltage_min") as "import_voltage_min",\
 max(p."import_voltage_max") as "import_voltage_max",\
 sum(p."import_current_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "import_current_avg", min(p."import_current_min") as "import_current_min",\
 max(p."import_current_max") as "import_current_max",\
 sum(p."import_power_avg" * p.sample_count) / nullif(sum(p.sample_count), 0) as "import_power_avg",\
 min(p."import_power_min") as "import_power_min", max(p."import_power_max") as "import_power_max",\
 sum(p."import_daily_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "import_daily_energy_avg", min(p."import_daily_energy_min") as "import_daily_energy_min",\
 max(p."import_daily_energy_max") as "import_daily_energy_max",\
 sum(p."import_total_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "import_total_energy_avg", min(p."import_total_energy_min") as "import_total_energy_min",\
 max(p."import_total_energy_max") as "import_total_energy_max",\
 sum(p."import_settlement_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "import_settlement_energy_avg",\
 min(p."import_settlement_energy_min") as "import_settlement_energy_min",\
 max(p."import_settlement_energy_max") as "import_settlement_energy_max",\
 sum(p."load_smart_mtr_voltage_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "load_smart_mtr_voltage_avg",\
 min(p."load_smart_mtr_voltage_min") as "load_smart_mtr_voltage_min",\
 max(p."load_smart_mtr_voltage_max") as "load_smart_mtr_voltage_max",\
 sum(p."load_smart_mtr_current_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "load_smart_mtr_current_avg",\
 min(p."load_smart_mtr_current_min") as "load_smart_mtr_current_min",\
 max(p."load_smart_mtr_current_max") as "load_smart_mtr_current_max",\
 sum(p."load_smart_mtr_power_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "load_smart_mtr_power_avg", min(p."load_smart_mtr_power_min") as "load_smart_mtr_power_min",\
 max(p."load_smart_mtr_power_max") as "load_smart_mtr_power_max",\
 sum(p."load_smart_mtr_daily_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "load_smart_mtr_daily_energy_avg",\
 min(p."load_smart_mtr_daily_energy_min") as "load_smart_mtr_daily_energy_min",\
 max(p."load_smart_mtr_daily_energy_max") as "load_smart_mtr_daily_energy_max",\
 sum(p."load_smart_mtr_total_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "load_smart_mtr_total_energy_avg",\
 min(p."load_smart_mtr_total_energy_min") as "load_smart_mtr_total_energy_min",\
 max(p."load_smart_mtr_total_energy_max") as "load_smart_mtr_total_energy_max",\
 sum(p."load_home_voltage_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "load_home_voltage_avg", min(p."load_home_voltage_min") as "load_home_voltage_min",\
 max(p."load_home_voltage_max") as "load_home_voltage_max",\
 sum(p."load_home_current_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "load_home_current_avg", min(p."load_home_current_min") as "load_home_current_min",\
 max(p."load_home_current_max") as "load_home_current_max",\
 sum(p."load_home_power_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "load_home_power_avg", min(p."load_home_power_min") as "load_home_power_min",\
 max(p."load_home_power_max") as "load_home_power_max",\
 sum(p."load_home_daily_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "load_home_daily_energy_avg",\
 min(p."load_home_daily_energy_min") as "load_home_daily_energy_min",\
 max(p."load_home_daily_energy_max") as "load_home_daily_energy_max",\
 sum(p."load_home_total_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "load_home_total_energy_avg",\
 min(p."load_home_total_energy_min") as "load_home_total_energy_min",\
 max(p."load_home_total_energy_max") as "load_home_total_energy_max",\
 sum(p."solar_input_voltage_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "solar_input_voltage_avg", min(p."solar_input_voltage_min") as "solar_input_voltage_min",\
 max(p."solar_input_voltage_max") as "solar_input_voltage_max",\
 sum(p."solar_input_current_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "solar_input_current_avg", min(p."solar_input_current_min") as "solar_input_current_min",\
 max(p."solar_input_current_max") as "solar_input_current_max",\
 sum(p."solar_input_power_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "solar_input_power_avg", min(p."solar_input_power_min") as "solar_input_power_min",\
 max(p."solar_input_power_max") as "solar_input_power_max",\
 sum(p."solar_input_daily_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "solar_input_daily_energy_avg",\
 min(p."solar_input_daily_energy_min") as "solar_input_daily_energy_min",\
 max(p."solar_input_daily_energy_max") as "solar_input_daily_energy_max",\
 sum(p."solar_input_total_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "solar_input_total_energy_avg",\
 min(p."solar_input_total_energy_min") as "solar_input_total_energy_min",\
 max(p."solar_input_total_energy_max") as "solar_input_total_energy_max",\
 sum(p."solar_output_voltage_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "solar_output_voltage_avg", min(p."solar_output_voltage_min") as "solar_output_voltage_min",\
 max(p."solar_output_voltage_max") as "solar_output_voltage_max",\
 sum(p."solar_output_current_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "solar_output_current_avg", min(p."solar_output_current_min") as "solar_output_current_min",\
 max(p."solar_output_current_max") as "solar_output_current_max",\
 sum(p."solar_output_power_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "solar_output_power_avg", min(p."solar_output_power_min") as "solar_output_power_min",\
 max(p."solar_output_power_max") as "solar_output_power_max",\
 sum(p."solar_output_daily_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "solar_output_daily_energy_avg",\
 min(p."solar_output_daily_energy_min") as "solar_output_daily_energy_min",\
 max(p."solar_output_daily_energy_max") as "solar_output_daily_energy_max",\
 sum(p."solar_output_total_energy_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "solar_output_total_energy_avg",\
 min(p."solar_output_total_energy_min") as "solar_output_total_energy_min",\
 max(p."solar_output_total_energy_max") as "solar_output_total_energy_max",\
 sum(p."net_solar_solar_power_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_solar_solar_power_avg",\
 min(p."net_solar_solar_power_min") as "net_solar_solar_power_min",\
 max(p."net_solar_solar_power_max") as "net_solar_solar_power_max",\
 sum(p."net_solar_load_power_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_solar_load_power_avg", min(p."net_solar_load_power_min") as "net_solar_load_power_min",\
 max(p."net_solar_load_power_max") as "net_solar_load_power_max",\
 sum(p."net_solar_net_power_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_solar_net_power_avg", min(p."net_solar_net_power_min") as "net_solar_net_power_min",\
 max(p."net_solar_net_power_max") as "net_solar_net_power_max",\
 sum(p."net_solar_solar_daily_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_solar_solar_daily_avg",\
 min(p."net_solar_solar_daily_min") as "net_solar_solar_daily_min",\
 max(p."net_solar_solar_daily_max") as "net_solar_solar_daily_max",\
 sum(p."net_solar_load_daily_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_solar_load_daily_avg", min(p."net_solar_load_daily_min") as "net_solar_load_daily_min",\
 max(p."net_solar_load_daily_max") as "net_solar_load_daily_max",\
 sum(p."net_solar_net_daily_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_solar_net_daily_avg", min(p."net_solar_net_daily_min") as "net_solar_net_daily_min",\
 max(p."net_solar_net_daily_max") as "net_solar_net_daily_max",\
 sum(p."net_solar_solar_total_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_solar_solar_total_avg",\
 min(p."net_solar_solar_total_min") as "net_solar_solar_total_min",\
 max(p."net_solar_solar_total_max") as "net_solar_solar_total_max",\
 sum(p."net_solar_load_total_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_solar_load_total_avg", min(p."net_solar_load_total_min") as "net_solar_load_total_min",\
 max(p."net_solar_load_total_max") as "net_solar_load_total_max",\
 sum(p."net_solar_net_total_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_solar_net_total_avg", min(p."net_solar_net_total_min") as "net_solar_net_total_min",\
 max(p."net_solar_net_total_max") as "net_solar_net_total_max",\
 sum(p."net_grid_export_power_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_grid_export_power_avg",\
 min(p."net_grid_export_power_min") as "net_grid_export_power_min",\
 max(p."net_grid_export_power_max") as "net_grid_export_power_max",\
 sum(p."net_grid_import_power_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_grid_import_power_avg",\
 min(p."net_grid_import_power_min") as "net_grid_import_power_min",\
 max(p."net_grid_import_power_max") as "net_grid_import_power_max",\
 sum(p."net_grid_net_power_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_grid_net_power_avg", min(p."net_grid_net_power_min") as "net_grid_net_power_min",\
 max(p."net_grid_net_power_max") as "net_grid_net_power_max",\
 sum(p."net_grid_export_daily_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_grid_export_daily_avg",\
 min(p."net_grid_export_daily_min") as "net_grid_export_daily_min",\
 max(p."net_grid_export_daily_max") as "net_grid_export_daily_max",\
 sum(p."net_grid_import_daily_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_grid_import_daily_avg",\
 min(p."net_grid_import_daily_min") as "net_grid_import_daily_min",\
 max(p."net_grid_import_daily_max") as "net_grid_import_daily_max",\
 sum(p."net_grid_net_daily_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_grid_net_daily_avg", min(p."net_grid_net_daily_min") as "net_grid_net_daily_min",\
 max(p."net_grid_net_daily_max") as "net_grid_net_daily_max",\
 sum(p."net_grid_export_total_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_grid_export_total_avg",\
 min(p."net_grid_export_total_min") as "net_grid_export_total_min",\
 max(p."net_grid_export_total_max") as "net_grid_export_total_max",\
 sum(p."net_grid_import_total_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_grid_import_total_avg",\
 min(p."net_grid_import_total_min") as "net_grid_import_total_min",\
 max(p."net_grid_import_total_max") as "net_grid_import_total_max",\
 sum(p."net_grid_net_total_avg" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "net_grid_net_total_avg", min(p."net_grid_net_total_min") as "net_grid_net_total_min",\
 max(p."net_grid_net_total_max") as "net_grid_net_total_max",\
 (array_agg(p."export_daily_energy_last" order by p.last_at desc))[1] as \
"export_daily_energy_last",\
 (array_agg(p."export_total_energy_last" order by p.last_at desc))[1] as \
"export_total_energy_last",\
 (array_agg(p."export_settlement_energy_last" order by p.last_at desc))[1] as \
"export_settlement_energy_last",\
 (array_agg(p."import_daily_energy_last" order by p.last_at desc))[1] as \
"import_daily_energy_last",\
 (array_agg(p."import_total_energy_last" order by p.last_at desc))[1] as \
"import_total_energy_last",\
 (array_agg(p."import_settlement_energy_last" order by p.last_at desc))[1] as \
"import_settlement_energy_last",\
 (array_agg(p."load_smart_mtr_daily_energy_last" order by p.last_at desc))[1] as \
"load_smart_mtr_daily_energy_last",\
 (array_agg(p."load_smart_mtr_total_energy_last" order by p.last_at desc))[1] as \
"load_smart_mtr_total_energy_last",\
 (array_agg(p."load_home_daily_energy_last" order by p.last_at desc))[1] as \
"load_home_daily_energy_last",\
 (array_agg(p."load_home_total_energy_last" order by p.last_at desc))[1] as \
"load_home_total_energy_last",\
 (array_agg(p."solar_input_daily_energy_last" order by p.last_at desc))[1] as \
"solar_input_daily_energy_last",\
 (array_agg(p."solar_input_total_energy_last" order by p.last_at desc))[1] as \
"solar_input_total_energy_last",\
 (array_agg(p."solar_output_daily_energy_last" order by p.last_at desc))[1] as \
"solar_output_daily_energy_last",\
 (array_agg(p."solar_output_total_energy_last" order by p.last_at desc))[1] as \
"solar_output_total_energy_last",\
 (array_agg(p."net_solar_solar_daily_last" order by p.last_at desc))[1] as \
"net_solar_solar_daily_last",\
 (array_agg(p."net_solar_load_daily_last" order by p.last_at desc))[1] as \
"net_solar_load_daily_last",\
 (array_agg(p."net_solar_solar_total_last" order by p.last_at desc))[1] as \
"net_solar_solar_total_last",\
 (array_agg(p."net_solar_load_total_last" order by p.last_at desc))[1] as \
"net_solar_load_total_last",\
 (array_agg(p."net_grid_export_daily_last" order by p.last_at desc))[1] as \
"net_grid_export_daily_last",\
 (array_agg(p."net_grid_import_daily_last" order by p.last_at desc))[1] as \
"net_grid_import_daily_last",\
 (array_agg(p."net_grid_export_total_last" order by p.last_at desc))[1] as \
"net_grid_export_total_last",\
 (array_agg(p."net_grid_import_total_last" order by p.last_at desc))[1] as \
"net_grid_import_total_last", sum(p."export_energy_wh") as "export_energy_wh",\
 sum(p."import_energy_wh") as "import_energy_wh",\
 sum(p."load_smart_mtr_energy_wh") as "load_smart_mtr_energy_wh",\
 sum(p."load_home_energy_wh") as "load_home_energy_wh",\
 sum(p."solar_input_energy_wh") as "solar_input_energy_wh",\
 sum(p."solar_output_energy_wh") as "solar_output_energy_wh",\
 sum(p."battery_is_charging_ratio" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "battery_is_charging_ratio",\
 sum(p."battery_alert_active_ratio" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "battery_alert_active_ratio",\
 sum(p."battery_connected_ratio" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "battery_connected_ratio",\
 sum(p."battery_valid_ratio" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "battery_valid_ratio",\
 sum(p."export_active_ratio" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "export_active_ratio",\
 sum(p."import_active_ratio" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "import_active_ratio",\
 sum(p."solar_input_generating_ratio" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "solar_input_generating_ratio",\
 sum(p."solar_output_generating_ratio" * p.sample_count) / nullif(sum(p.sample_count),\
 0) as "solar_output_generating_ratio",\
 (array_agg(p."net_solar_status_last" order by p.last_at desc))[1] as "net_solar_status_last",\
 (array_agg(p."net_grid_status_last" order by p.last_at desc))[1] as "net_grid_status_last"
from (
  select t.meter_id, t.bucket as b, t."sample_count", t."first_at", t."last_at",\
 t."battery_voltage_avg", t."battery_voltage_min", t."battery_voltage_max", t."battery_soc_avg",\
 t."battery_soc_min", t."battery_soc_max", t."battery_charge_rate_avg",\
 t."battery_charge_rate_min", t."battery_charge_rate_max", t."battery_estimated_capacity_avg",\
 t."battery_estimated_capacity_min", t."battery_estimated_capacity_max",\
 t."battery_alert_threshold_avg", t."battery_alert_threshold_min", t."battery_alert_threshold_max",\
 t."export_voltage_avg", t."export_voltage_min", t."export_voltage_max", t."export_current_avg",\
 t."export_current_min", t."export_current_max", t."export_power_avg", t."export_power_min",\
 t."export_power_max", t."export_daily_energy_avg", t."export_daily_energy_min",\
 t."export_daily_energy_max", t."export_total_energy_avg", t."export_total_energy_min",\
 t."export_total_energy_max", t."export_settlement_energy_avg", t."export_settlement_energy_min",\
 t."export_settlement_energy_max", t."import_voltage_avg", t."import_voltage_min",\
 t."import_voltage_max", t."import_current_avg", t."import_current_min", t."import_current_max",\
 t."import_power_avg", t."import_power_min", t."import_power_max", t."import_daily_energy_avg",\
 t."import_daily_energy_min", t."import_daily_energy_max", t."import_total_energy_avg",\
 t."import_total_energy_min", t."import_total_energy_max", t."import_settlement_energy_avg",\
 t."import_settlement_energy_min", t."import_settlement_energy_max",\
 t."load_smart_mtr_voltage_avg", t."load_smart_mtr_voltage_min", t."load_smart_mtr_voltage_max",\
 t."load_smart_mtr_current_avg", t."load_smart_mtr_current_min", t."load_smart_mtr_current_max",\
 t."load_smart_mtr_power_avg", t."load_smart_mtr_power_min", t."load_smart_mtr_power_max",\
 t."load_smart_mtr_daily_energy_avg", t."load_smart_mtr_daily_energy_min",\
 t."load_smart_mtr_daily_energy_max", t."load_smart_mtr_total_energy_avg",\
 t."load_smart_mtr_total_energy_min", t."load_smart_mtr_total_energy_max",\
 t."load_home_voltage_avg", t."load_home_voltage_min", t."load_home_voltage_max",\
 t."load_home_current_avg", t."load_home_current_min", t."load_home_current_max",\
 t."load_home_power_avg", t."load_home_power_min", t."load_home_power_max",\
 t."load_home_daily_energy_avg", t."load_home_daily_energy_min", t."load_home_daily_energy_max",\
 t."load_home_total_energy_avg", t."load_home_total_energy_min", t."load_home_total_energy_max",\
 t."solar_input_voltage_avg", t."solar_input_voltage_min", t."solar_input_voltage_max",\
 t."solar_input_current_avg", t."solar_input_current_min", t."solar_input_current_max",\
 t."solar_input_power_avg", t."solar_input_power_min", t."solar_input_power_max",\
 t."solar_input_daily_energy_avg", t."solar_input_daily_energy_min",\
 t."solar_input_daily_energy_max", t."solar_input_total_energy_avg",\
 t."solar_input_total_energy_min", t."solar_input_total_energy_max", t."solar_output_voltage_avg",\
 t."solar_output_voltage_min", t."solar_output_voltage_max", t."solar_output_current_avg",\
 t."solar_output_current_min", t."solar_output_current_max", t."solar_output_power_avg",\
 t."solar_output_power_min", t."solar_output_power_max", t."solar_output_daily_energy_avg",\
 t."solar_output_daily_energy_min", t."solar_output_daily_energy_max",\
 t."solar_output_total_energy_avg", t."solar_output_total_energy_min",\
 t."solar_output_total_energy_max", t."net_solar_solar_power_avg", t."net_solar_solar_power_min",\
 t."net_solar_solar_power_max", t."net_solar_load_power_avg", t."net_solar_load_power_min",\
 t."net_solar_load_power_max", t."net_solar_net_power_avg", t."net_solar_net_power_min",\
 t."net_solar_net_power_max", t."net_solar_solar_daily_avg", t."net_solar_solar_daily_min",\
 t."net_solar_solar_daily_max", t."net_solar_load_daily_avg", t."net_solar_load_daily_min",\
 t."net_solar_load_daily_max", t."net_solar_net_daily_avg", t."net_solar_net_daily_min",\
 t."net_solar_net_daily_max", t."net_solar_solar_total_avg", t."net_solar_solar_total_min",\
 t."net_solar_solar_total_max", t."net_solar_load_total_avg", t."net_solar_load_total_min",\
 t."net_solar_load_total_max", t."net_solar_net_total_avg", t."net_solar_net_total_min",\
 t."net_solar_net_total_max", t."net_grid_export_power_avg", t."net_grid_export_power_min",\
 t."net_grid_export_power_max", t."net_grid_import_power_avg", t."net_grid_import_power_min",\
 t."net_grid_import_power_max", t."net_grid_net_power_avg", t."net_grid_net_power_min",\
 t."net_grid_net_power_max", t."net_grid_export_daily_avg", t."net_grid_export_daily_min",\
 t."net_grid_export_daily_max", t."net_grid_import_daily_avg", t."net_grid_import_daily_min",\
 t."net_grid_import_daily_max", t."net_grid_net_daily_avg", t."net_grid_net_daily_min",\
 t."net_grid_net_daily_max", t."net_grid_export_total_avg", t."net_grid_export_total_min",\
 t."net_grid_export_total_max", t."net_grid_import_total_avg", t."net_grid_import_total_min",\
 t."net_grid_import_total_max", t."net_grid_net_total_avg", t."net_grid_net_total_min",\
 t."net_grid_net_total_max", t."export_daily_energy_last", t."export_total_energy_last",\
 t."export_settlement_energy_last", t."import_daily_energy_last", t."import_total_energy_last",\
 t."import_settlement_energy_last", t."load_smart_mtr_daily_energy_last",\
 t."load_smart_mtr_total_energy_last", t."load_home_daily_energy_last",\
 t."load_home_total_energy_last", t."solar_input_daily_energy_last",\
 t."solar_input_total_energy_last", t."solar_output_daily_energy_last",\
 t."solar_output_total_energy_last", t."net_solar_solar_daily_last", t."net_solar_load_daily_last",\
 t."net_solar_solar_total_last", t."net_solar_load_total_last", t."net_grid_export_daily_last",\
 t."net_grid_import_daily_last", t."net_grid_export_total_last", t."net_grid_import_total_last",\
 t."export_energy_wh", t."import_energy_wh", t."load_smart_mtr_energy_wh", t."load_home_energy_wh",\
 t."solar_input_energy_wh", t."solar_output_energy_wh", t."battery_is_charging_ratio",\
 t."battery_alert_active_ratio", t."battery_connected_ratio", t."battery_valid_ratio",\
 t."export_active_ratio", t."import_active_ratio", t."solar_input_generating_ratio",\
 t."solar_output_generating_ratio", t."net_solar_status_last", t."net_grid_status_last"
  from "telemetry_aggregates_1d_folded" t
  union all
  select r.meter_id, (date_trunc('day',\
 f.bucket at time zone z.timezone) at time zone z.timezone) as b, f."sample_count", f."first_at",\
 f."last_at", f."battery_voltage_avg", f."battery_voltage_min", f."battery_voltage_max",\
 f."battery_soc_avg", f."battery_soc_min", f."battery_soc_max", f."battery_charge_rate_avg",\
 f."battery_charge_rate_min", f."battery_charge_rate_max", f."battery_estimated_capacity_avg",\
 f."battery_estimated_capacity_min", f."battery_estimated_capacity_max",\
 f."battery_alert_threshold_avg", f."battery_alert_threshold_min", f."battery_alert_threshold_max",\
 f."export_voltage_avg", f."export_voltage_min", f."export_voltage_max", f."export_current_avg",\
 f."export_current_min", f."export_current_max", f."export_power_avg", f."export_power_min",\
 f."export_power_max", f."export_daily_energy_avg", f."export_daily_energy_min",\
 f."export_daily_energy_max", f."export_total_energy_avg", f."export_total_energy_min",\
 f."export_total_energy_max", f."export_settlement_energy_avg", f."export_settlement_energy_min",\
 f."export_settlement_energy_max", f."import_voltage_avg", f."import_voltage_min",\
 f."import_voltage_max", f."import_current_avg", f."import_current_min", f."import_current_max",\
 f."import_power_avg", f."import_power_min", f."import_power_max", f."import_daily_energy_avg",\
 f."import_daily_energy_min", f."import_daily_energy_max", f."import_total_energy_avg",\
 f."import_total_energy_min", f."import_total_energy_max", f."import_settlement_energy_avg",\
 f."import_settlement_energy_min", f."import_settlement_energy_max",\
 f."load_smart_mtr_voltage_avg", f."load_smart_mtr_voltage_min", f."load_smart_mtr_voltage_max",\
 f."load_smart_mtr_current_avg", f."load_smart_mtr_current_min", f."load_smart_mtr_current_max",\
 f."load_smart_mtr_power_avg", f."load_smart_mtr_power_min", f."load_smart_mtr_power_max",\
 f."load_smart_mtr_daily_energy_avg", f."load_smart_mtr_daily_energy_min",\
 f."load_smart_mtr_daily_energy_max", f."load_smart_mtr_total_energy_avg",\
 f."load_smart_mtr_total_energy_min", f."load_smart_mtr_total_energy_max",\
 f."load_home_voltage_avg", f."load_home_voltage_min", f."load_home_voltage_max",\
 f."load_home_current_avg", f."load_home_current_min", f."load_home_current_max",\
 f."load_home_power_avg", f."load_home_power_min", f."load_home_power_max",\
 f."load_home_daily_energy_avg", f."load_home_daily_energy_min", f."load_home_daily_energy_max",\
 f."load_home_total_energy_avg", f."load_home_total_energy_min", f."load_home_total_energy_max",\
 f."solar_input_voltage_avg", f."solar_input_voltage_min", f."solar_input_voltage_max",\
 f."solar_input_current_avg", f."solar_input_current_min", f."solar_input_current_max",\
 f."solar_input_power_avg", f."solar_input_power_min", f."solar_input_power_max",\
 f."solar_input_daily_energy_avg", f."solar_input_daily_energy_min",\
 f."solar_input_daily_energy_max", f."solar_input_total_energy_avg",\
 f."solar_input_total_energy_min", f."solar_input_total_energy_max", f."solar_output_voltage_avg",\
 f."solar_output_voltage_min", f."solar_output_voltage_max", f."solar_output_current_avg",\
 f."solar_output_current_min", f."solar_output_current_max", f."solar_output_power_avg",\
 f."solar_output_power_min", f."solar_output_power_max", f."solar_output_daily_energy_avg",\
 f."solar_output_daily_energy_min", f."solar_output_daily_energy_max",\
 f."solar_output_total_energy_avg", f."solar_output_total_energy_min",\
 f."solar_output_total_energy_max", f."net_solar_solar_power_avg", f."net_solar_solar_power_min",\
 f."net_solar_solar_power_max", f."net_solar_load_power_avg", f."net_solar_load_power_min",\
 f."net_solar_load_power_max", f."net_solar_net_power_avg", f."net_solar_net_power_min",\
 f."net_solar_net_power_max", f."net_solar_solar_daily_avg", f."net_solar_solar_daily_min",\
 f."net_solar_solar_daily_max", f."net_solar_load_daily_avg", f."net_solar_load_daily_min",\
 f."net_solar_load_daily_max", f."net_solar_net_daily_avg", f."net_solar_net_daily_min",\
 f."net_solar_net_daily_max", f."net_solar_solar_total_avg", f."net_solar_solar_total_min",\
 f."net_solar_solar_total_max", f."net_solar_load_total_avg", f."net_solar_load_total_min",\
 f."net_solar_load_total_max", f."net_solar_net_total_avg", f."net_solar_net_total_min",\
 f."net_solar_net_total_max", f."net_grid_export_power_avg", f."net_grid_export_power_min",\
 f."net_grid_export_power_max", f."net_grid_import_power_avg", f."net_grid_import_power_min",\
 f."net_grid_import_power_max", f."net_grid_net_power_avg", f."net_grid_net_power_min",\
 f."net_grid_net_power_max", f."net_grid_export_daily_avg", f."net_grid_export_daily_min",\
 f."net_grid_export_daily_max", f."net_grid_import_daily_avg", f."net_grid_import_daily_min",\
 f."net_grid_import_daily_max", f."net_grid_net_daily_avg", f."net_grid_net_daily_min",\
 f."net_grid_net_daily_max", f."net_grid_export_total_avg", f."net_grid_export_total_min",\
 f."net_grid_export_total_max", f."net_grid_import_total_avg", f."net_grid_import_total_min",\
 f."net_grid_import_total_max", f."net_grid_net_total_avg", f."net_grid_net_total_min",\
 f."net_grid_net_total_max", f."export_daily_energy_last", f."export_total_energy_last",\
 f."export_settlement_energy_last", f."import_daily_energy_last", f."import_total_energy_last",\
 f."import_settlement_energy_last", f."load_smart_mtr_daily_energy_last",\
 f."load_smart_mtr_total_energy_last", f."load_home_daily_energy_last",\
 f."load_home_total_energy_last", f."solar_input_daily_energy_last",\
 f."solar_input_total_energy_last", f."solar_output_daily_energy_last",\
 f."solar_output_total_energy_last", f."net_solar_solar_daily_last", f."net_solar_load_daily_last",\
 f."net_solar_solar_total_last", f."net_solar_load_total_last", f."net_grid_export_daily_last",\
 f."net_grid_import_daily_last", f."net_grid_export_total_last", f."net_grid_import_total_last",\
 f."export_energy_wh", f."import_energy_wh", f."load_smart_mtr_energy_wh", f."load_home_energy_wh",\
 f."solar_input_energy_wh", f."solar_output_energy_wh", f."battery_is_charging_ratio",\
 f."battery_alert_active_ratio", f."battery_connected_ratio", f."battery_valid_ratio",\
 f."export_active_ratio", f."import_active_ratio", f."solar_input_generating_ratio",\
 f."solar_output_generating_ratio", f."net_solar_status_last", f."net_grid_status_last"
  from "rollup_fold" r cross join "rollup_state" z
  cross join lateral (select * from "telemetry_aggregates_5m" f5
    where f5.meter_id = r.meter_id and f5.bucket >= r.folded_until) f
) p
group by p.meter_id, p.b""",
)


def statements() -> list[str]:
    return list(STATEMENTS)
