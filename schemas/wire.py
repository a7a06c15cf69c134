"""Every name that crosses a wire: MQTT topics, Redis keys, PostgreSQL tables.

Nothing outside this module spells one of these names as a string literal. Topics and keys
carry a configurable prefix (``ENERLINK_TOPIC_PREFIX``, ``ENERLINK_KEY_PREFIX``) so that tests
and tenants can share one broker and one Redis without seeing each other.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Literal

#: The per-meter topics whose meter id :meth:`Topics.meter_of` reads back.
MeterTopic = Literal["cmd", "cmd/ack", "presence", "confirm"]

DEFAULT_TOPIC_PREFIX = "enerlink"
DEFAULT_KEY_PREFIX = "telemetry"
DEFAULT_DISCOVERY_PREFIX = "homeassistant"


@dataclass(frozen=True, slots=True)
class Topics:
    """MQTT topics under one prefix (default ``enerlink``)."""

    prefix: str = DEFAULT_TOPIC_PREFIX

    @property
    def data(self) -> str:
        """Measurements, every 5-10 s per meter."""
        return f"{self.prefix}/meters/data"

    @property
    def status(self) -> str:
        """Device health and inventory, every 30-60 s and on change."""
        return f"{self.prefix}/meters/status"

    @property
    def all_meters(self) -> str:
        """Wildcard for mosquitto_sub and the dashboard."""
        return f"{self.prefix}/meters/#"

    def command(self, meter_id: str) -> str:
        """Commands to one meter (scenario, clear, settle, status_now)."""
        return f"{self.prefix}/meters/{meter_id}/cmd"

    def command_ack(self, meter_id: str) -> str:
        """A meter's answer to a command."""
        return f"{self.prefix}/meters/{meter_id}/cmd/ack"

    def confirm(self, meter_id: str) -> str:
        """Retained confirmation to one meter of what the pipeline stored (:mod:`enerlink.schemas.delivery`);
        the broker ACL lets only that meter read it."""
        return f"{self.prefix}/meters/{meter_id}/confirm"

    @property
    def all_confirm(self) -> str:
        return f"{self.prefix}/meters/+/confirm"

    @property
    def resent(self) -> str:
        """Data messages a meter republishes from its log on request (the stored bytes, unchanged)."""
        return f"{self.prefix}/meters/resent"

    @property
    def all_command_acks(self) -> str:
        return f"{self.prefix}/meters/+/cmd/ack"

    def presence(self, meter_id: str) -> str:
        """Retained online/offline marker; the edge's MQTT last will publishes ``offline`` here."""
        return f"{self.prefix}/meters/{meter_id}/presence"

    @property
    def all_presence(self) -> str:
        return f"{self.prefix}/meters/+/presence"

    def ha_state(self, meter_id: str) -> str:
        """Retained Home Assistant state of one meter: lifetime kWh counters that never decrease, power,
        SOC and voltage (published by :mod:`hass`; the discovery configs point at it)."""
        return f"{self.prefix}/meters/{meter_id}/ha/state"

    def meter_of(self, topic: str, kind: MeterTopic) -> str | None:
        """The meter id in a per-meter topic of ``kind`` (``cmd``, ``cmd/ack``, ``presence``,
        ``confirm``), or None when ``topic`` is not one (wrong prefix or kind, or an id spanning levels)."""
        head, tail = f"{self.prefix}/meters/", f"/{kind}"
        if not (topic.startswith(head) and topic.endswith(tail)):
            return None
        meter = topic[len(head) : -len(tail)]
        return meter if meter and "/" not in meter else None

    @property
    def ha_bridge(self) -> str:
        """Retained ``online``/``offline`` (last will) of the Home Assistant bridge (:mod:`hass`)."""
        return f"{self.prefix}/ha/bridge"

    @property
    def fleet_command(self) -> str:
        """Commands to the simulated fleet process (start, stop):
        ``enerlink.schemas.simulation.FleetCommand``."""
        return f"{self.prefix}/fleet/cmd"

    @property
    def fleet_state(self) -> str:
        """The simulated fleet's state, retained (``enerlink.schemas.simulation.FleetState``); its last will
        says ``online: false``."""
        return f"{self.prefix}/fleet/state"

    @staticmethod
    def shared(group: str, topic: str) -> str:
        """An MQTT 5 shared subscription: each message goes to one member of ``group``."""
        return f"$share/{group}/{topic}"


@dataclass(frozen=True, slots=True)
class Keys:
    """Redis keys under one prefix (default ``telemetry``).

    On one Redis server (``parts`` 0) the names are the ones below. On a Redis Cluster the fleet is cut
    into ``parts`` fixed parts by meter id (:meth:`part_of`), and every key of part ``n`` carries the hash
    tag ``{pn}`` after the prefix (``telemetry:{p3}:latest:data``, ``telemetry:{p3}:timeseries:M1``): one
    slot holds a meter's keys and its part of every fleet-wide key, so each script call of the ingest
    touches one slot. Writers use :meth:`of` (the keys of a meter's part), readers merge
    :meth:`each_part`. Names that are not in a part (the live channel, the Home Assistant counters) are
    the same in both layouts.
    """

    prefix: str = DEFAULT_KEY_PREFIX
    parts: int = 0
    """0: one Redis server (plain names); N > 0: a Redis Cluster with N parts (``ENERLINK_REDIS_PARTS``)."""
    base: str = ""
    """The prefix without the part's tag, for a part's keys (:meth:`part`); empty otherwise."""

    def __post_init__(self) -> None:
        if self.parts and ("{" in self.prefix or "}" in self.prefix):
            raise ValueError(f"a key prefix with braces cannot take hash-tagged parts: {self.prefix!r}")

    def part_of(self, meter_id: str) -> int:
        """The part of ``meter_id`` (0 on one Redis server): CRC-32 of its id modulo ``parts``."""
        return zlib.crc32(meter_id.encode()) % self.parts if self.parts else 0

    def part(self, index: int) -> Keys:
        """The keys of part ``index`` (these keys themselves on one Redis server)."""
        if not self.parts:
            return self
        return Keys(f"{self.prefix}:{{p{index}}}", base=self.prefix)

    def of(self, meter_id: str) -> Keys:
        """The keys of the part that holds ``meter_id``."""
        return self.part(self.part_of(meter_id)) if self.parts else self

    def each_part(self) -> list[Keys]:
        """Every part's keys, in part order (one element on one Redis server)."""
        return [self.part(i) for i in range(self.parts)] if self.parts else [self]

    @property
    def fleet(self) -> Keys:
        """The keys outside any part (this object unless it is a part's)."""
        return Keys(self.base) if self.base else self

    @property
    def latest_data(self) -> str:
        """Hash: meterId -> newest data message JSON."""
        return f"{self.prefix}:latest:data"

    @property
    def latest_status(self) -> str:
        """Hash: meterId -> newest status message JSON."""
        return f"{self.prefix}:latest:status"

    @property
    def latest_data_at(self) -> str:
        """Hash: meterId -> epoch ms of the message in :attr:`latest_data` (newer-wins bookkeeping)."""
        return f"{self.prefix}:latest:data:at"

    @property
    def latest_status_at(self) -> str:
        """Hash: meterId -> epoch ms of the message in :attr:`latest_status`."""
        return f"{self.prefix}:latest:status:at"

    def timeseries(self, meter_id: str) -> str:
        """Sorted set: score = message datetime (epoch ms), member = data message JSON."""
        return f"{self.prefix}:timeseries:{meter_id}"

    def status_timeseries(self, meter_id: str) -> str:
        """Sorted set of status messages, same rules as :meth:`timeseries`."""
        return f"{self.prefix}:status_timeseries:{meter_id}"

    @property
    def meters(self) -> str:
        """Hash: meterId -> last seen (epoch ms): when its newest message came, or a data message's own
        time if later (a meter's clock running ahead)."""
        return f"{self.prefix}:meters"

    @property
    def rejected(self) -> str:
        """Capped stream of rejected messages (dead letters)."""
        return f"{self.prefix}:rejected"

    @property
    def rejected_counts(self) -> str:
        """Hash: reason -> count of rejected messages."""
        return f"{self.prefix}:rejected:counts"

    @property
    def late_minutes(self) -> str:
        """Sorted set of (meter, minute) pairs touched by late data, for the aggregator to redo.

        Member ``late_member(meter_id, minute_ms)``, score = receipt time (epoch ms). The ingest adds
        one whenever it stores a data message whose minute had already ended when it arrived; the
        aggregator re-aggregates those minutes and removes entries whose score is not newer than
        the moment it read them (so a flag raised meanwhile survives).
        """
        return f"{self.prefix}:late:minutes"

    @staticmethod
    def late_member(meter_id: str, minute_ms: int) -> str:
        return f"{meter_id}|{minute_ms}"

    @staticmethod
    def parse_late_member(member: str) -> tuple[str, int]:
        meter_id, _, minute = member.rpartition("|")
        return meter_id, int(minute)

    def late_data(self, meter_id: str) -> str:
        """Sorted set of late data messages older than the live window (or of a closed minute near its
        start: the ingest's late margin), same layout as timeseries."""
        return f"{self.prefix}:late:{meter_id}"

    @property
    def late_done(self) -> str:
        """Sorted set of re-aggregated late (meter, minute) pairs, score = when (Redis ms); their
        ``late_data`` members are deleted by the aggregator after a hold period."""
        return f"{self.prefix}:aggregator:late_done"

    @property
    def gaps(self) -> str:
        """Hash: meterId -> JSON {last_seq, missed, duplicates}."""
        return f"{self.prefix}:gaps"

    def seq_record(self, meter_id: str) -> str:
        """String: the ``seq`` ranges of one meter stored in Redis, and those the meter said it does not
        hold (:mod:`enerlink.schemas.delivery`); what confirmations and gap repair are computed from.

        Format (written by the ingest's Lua scripts, ``ingest/seq_record.py``): ``t:<newest datetime
        ms>;c:<through>;r:<ranges beyond through>;k:<last confirmed ms>;u:<scheduled ms>;a:<resend
        attempts>;g:<holes up to this seq may be asked for>;e:<restart datetime ms>;z:<restart seq>``,
        fields absent when 0 or empty; ranges are ``a-b`` or ``a``, comma separated. Every seq in 1..c and
        in r is stored or not held by the meter (or given up: at most 256 ranges are kept).
        """
        return f"{self.prefix}:seqs:{meter_id}"

    @property
    def confirm_due(self) -> str:
        """Sorted set: meterId -> Redis ms from when the meter's next confirmation may be sent (its seq
        record changed); the ingest workers claim due meters atomically."""
        return f"{self.prefix}:confirm:due"

    @property
    def resend_due(self) -> str:
        """Sorted set: meterId -> Redis ms from when the meter (whose seq record has holes) may be asked to
        resend; a claim pushes it ahead (the cross-worker lease), then to the backoff's next attempt."""
        return f"{self.prefix}:resend:due"

    def repaired(self, meter_id: str) -> str:
        """Sorted set: score = message datetime (epoch ms), member = ``seq`` of a data message that was
        stored from ``Topics.resent`` (a repaired gap); same window as :meth:`timeseries`."""
        return f"{self.prefix}:repaired:{meter_id}"

    @property
    def presence(self) -> str:
        """Hash: meterId -> JSON {online, since}."""
        return f"{self.prefix}:presence"

    @property
    def events(self) -> str:
        """Stream of events raised by the ingest (offline/online) for the events table."""
        return f"{self.prefix}:events"

    @property
    def live_channel(self) -> str:
        """Pub/sub channel on which the ingest announces each stored data message (live WebSocket);
        one for the fleet, in either layout."""
        return f"{self.fleet.prefix}:live"

    @property
    def ha_counters(self) -> str:
        """Hash: meterId -> JSON of the Home Assistant bridge's counter state (last counters seen and the
        lifetime sums that only grow; :mod:`enerlink.hass.energy`); one for the fleet, in either layout."""
        return f"{self.fleet.prefix}:ha:counters"

    @property
    def raw_export(self) -> str:
        """Hash written by the archiver's raw export after each verified run (a copy of its PostgreSQL
        state, ``Tables.RAW_EXPORT_STATE``): ``through`` = epoch ms before which every data reading of
        the live window is in the archive, ``late`` = Redis ms before which late readings (flags in
        :attr:`late_minutes` / :attr:`late_done` scored before it) are in the archive: on a Redis
        Cluster the earliest of the masters' clocks at the start of the export's last run. The aggregator
        never trims a snapshot the archive does not hold yet (``aggregator/reader.py``); absent: no
        raw export runs, the trim is the window's alone."""
        return f"{self.prefix}:raw:exported"

    @property
    def rate_limited(self) -> str:
        """Hash: meterId -> count of messages the ingest dropped over the per-meter rate limit."""
        return f"{self.prefix}:rate_limited"


@dataclass(frozen=True, slots=True)
class HaDiscovery:
    """Home Assistant's MQTT discovery topics under its discovery prefix (default ``homeassistant``).

    ``<prefix>/<component>/<node_id>/<object_id>/config`` (retained; an empty payload removes the
    entity) and HA's birth/last-will topic ``<prefix>/status`` (``online`` when HA (re)starts).
    """

    prefix: str = DEFAULT_DISCOVERY_PREFIX

    def config(self, component: str, node_id: str, object_id: str) -> str:
        return f"{self.prefix}/{component}/{node_id}/{object_id}/config"

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def everything(self) -> str:
        return f"{self.prefix}/#"


class Tables:
    """PostgreSQL tables and other database object names."""

    MIGRATIONS = "enerlink_migrations"
    TELEMETRY_AGGREGATES = "telemetry_aggregates"
    #: A view since migration 0011: the complete 5-minute buckets (``TELEMETRY_5M_CLOSED``, each row
    #: written once when its bucket is complete) and the open ones (``TELEMETRY_5M_OPEN``, merged with
    #: each minute's rows); a bucket is in one of the two, never both (aggregator/rollups.py).
    TELEMETRY_5M = "telemetry_aggregates_5m"
    TELEMETRY_5M_CLOSED = "telemetry_aggregates_5m_closed"
    TELEMETRY_5M_OPEN = "telemetry_aggregates_5m_open"
    TELEMETRY_1H = "telemetry_aggregates_1h"
    TELEMETRY_1D = "telemetry_aggregates_1d"
    #: ``TELEMETRY_1H`` and ``TELEMETRY_1D`` are views since migration 0008 (aggregator/fold.py): each
    #: one's folded table (the 5-minute buckets already folded in) plus the 5-minute rows not yet folded.
    TELEMETRY_1H_FOLDED = "telemetry_aggregates_1h_folded"
    TELEMETRY_1D_FOLDED = "telemetry_aggregates_1d_folded"
    #: Per meter: the 5-minute buckets before ``folded_until`` are folded into the folded tables.
    ROLLUP_FOLD = "rollup_fold"
    #: One row: the time zone of the daily buckets (``ENERLINK_TIMEZONE``), for the daily view.
    ROLLUP_STATE = "rollup_state"
    AGGREGATOR_WATERMARK = "aggregator_watermark"
    #: Aggregator shards (migration 0015): one row per shard, leased to one aggregator process at a
    #: time (``owner`` until ``expires_at``), and one row per live aggregator process.
    AGGREGATOR_LEASES = "aggregator_leases"
    AGGREGATOR_MEMBERS = "aggregator_members"
    #: SQL function ``(meter_id text, shards integer) -> integer``: the shard of a meter, the same
    #: as :func:`enerlink.shards.shard_of` (migration 0015).
    SHARD_OF = "enerlink_shard_of"
    EVENTS = "events"
    ARCHIVE_MANIFEST = "archive_manifest"
    #: SQL function ``(parent text, at timestamptz) -> text``: creates (if missing) the monthly range
    #: partition of ``parent`` holding ``at`` (UTC months, named like :meth:`month_partition`).
    ENSURE_MONTH_PARTITION = "enerlink_ensure_month_partition"
    AGGREGATOR_EVENT_STATE = "aggregator_event_state"
    #: Per-meter minute aggregates of status messages (device health), filled by the aggregator.
    DEVICE_HEALTH = "device_health_aggregates"
    #: The aggregator's per-meter device-health event state (weak signal, low memory, reboots, silence).
    AGGREGATOR_HEALTH_STATE = "aggregator_health_state"
    #: Billing settlements: one row per closed period per meter (the API's settlements routes).
    SETTLEMENTS = "settlements"
    #: One row per raw-readings Parquet object in the archive (archiver/raw_export.py, migration 0101).
    RAW_MANIFEST = "raw_archive_manifest"
    #: One row: how far the raw export has gone (``through``, ``late_cursor``; migration 0101).
    RAW_EXPORT_STATE = "raw_export_state"
    #: The tables partitioned by UTC month (``ENSURE_MONTH_PARTITION``; migrations 0001 and 0013).
    MONTHLY_PARTITIONED = (TELEMETRY_AGGREGATES, TELEMETRY_5M_CLOSED)
    #: Month partitions whose primary key the archiver has rebuilt full (archiver/packing.py,
    #: migration 0102).
    PACKED_KEYS = "packed_keys"

    #: Stored energy units in a watt-hour: a bucket's energy per channel is a bigint count of 10 uWh
    #: (the counters' 5th decimal; migration 0012), so the rollups' sums are exact.
    ENERGY_UNITS_PER_WH = 100_000

    @staticmethod
    def energy_column(subsystem: str) -> str:
        """A statistics row's energy of a channel (``import``, ``solar_output``, ...), in 10 uWh."""
        return f"{subsystem}_energy_10uwh"

    @staticmethod
    def energy_wh_sql(subsystem: str, alias: str = "") -> str:
        """SQL: that energy in Wh (double precision: the nearest to the exact decimal)."""
        prefix = f"{alias}." if alias else ""
        return f'({prefix}"{Tables.energy_column(subsystem)}"::float8 / {Tables.ENERGY_UNITS_PER_WH})'

    #: the minute table's first and last snapshot times: milliseconds after ``bucket`` (migration 0014)
    MINUTE_OFFSETS = {"first_at": "first_ms", "last_at": "last_ms"}

    @staticmethod
    def minute_time_sql(name: str, alias: str = "") -> str:
        """SQL: the minute row's ``first_at`` or ``last_at`` (timestamptz) from its offset."""
        prefix = f"{alias}." if alias else ""
        offset = Tables.MINUTE_OFFSETS[name]
        return f'({prefix}"bucket" + {prefix}"{offset}" * interval \'1 millisecond\')'

    @staticmethod
    def enum_type(column: str) -> str:
        """The PostgreSQL enum type of an enum field's column stem (migration 0012), e.g.
        ``net_grid_status``: its labels are the contract's values, in order."""
        return column

    @staticmethod
    def month_partition(table: str, year: int, month: int) -> str:
        """Name of the monthly range partition of ``table`` (e.g. ``telemetry_aggregates_p202510``)."""
        return f"{table}_p{year:04d}{month:02d}"


class Buckets:
    """Object-store layout (MinIO or the local archive folder)."""

    @staticmethod
    def month_object(table: str, year: int, month: int) -> str:
        return f"{table}/{year:04d}/{month:02d}.csv.gz"

    RAW_GROUPS = 16
    #: Media type of the raw-readings objects and downloads (Parquet).
    RAW_CONTENT_TYPE = "application/vnd.apache.parquet"

    @staticmethod
    def raw_group(meter_id: str) -> int:
        """A meter's raw-readings group, 0-15: CRC-32 (zlib) of its UTF-8 id, modulo 16. Never changes,
        so a meter's readings of a day are always in the files of one group."""
        return zlib.crc32(meter_id.encode()) % Buckets.RAW_GROUPS

    @staticmethod
    def raw_object(day: str, group: int, hour: int, part: int) -> str:
        """Raw readings of one group and UTC hour of ``day`` (``YYYY-MM-DD``): part 0 is the hour as
        exported after it closed, parts 1.. readings that arrived later (late, repaired)."""
        return f"raw/{day}/g{group:02d}/{hour:02d}-{part:03d}.parquet"
