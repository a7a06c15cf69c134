"""Response models of the HTTP API (the OpenAPI document is built from these)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Resolution = Literal["1m", "5m", "1h", "1d"]
#: what a client may ask for: a resolution, or ``auto`` (the finest one within the point limit)
ResolutionChoice = Literal["auto", "1m", "5m", "1h", "1d"]
HealthBucket = Literal["auto", "1m", "5m", "15m", "1h", "6h", "1d"]


class Problem(BaseModel):
    detail: str | list[dict[str, Any]] = Field(examples=["meter METER009 has no data"])


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    redis: str = Field(examples=["ok"])
    postgres: str = Field(examples=["ok"])
    live_mqtt: str = Field(examples=["connected"])

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"status": "ok", "redis": "ok", "postgres": "ok", "live_mqtt": "connected"}]
        }
    )


class MeterInfo(BaseModel):
    meter_id: str = Field(examples=["METER001"])
    last_seen: str | None = Field(
        None, description="ISO 8601 UTC of the newest message", examples=["2025-10-26T04:27:10Z"]
    )
    last_seen_ms: int | None = Field(None, examples=[1761452830000])
    online: bool = Field(
        description="presence marker from the edge (last will), else seen within the offline window"
    )
    online_since: Any = Field(
        None, description="when the presence state last changed, as the ingest recorded it"
    )
    has_data: bool
    has_status: bool


class Event(BaseModel):
    id: int | None = None
    meter_id: str = Field(examples=["METER001"])
    at: str = Field(examples=["2025-10-26T04:27:10Z"])
    kind: str = Field(examples=["offline"])
    severity: str | None = Field(None, examples=["warning"])
    details: Any = Field(None, examples=[{"last_seen": "2025-10-26T04:26:10Z"}])

    model_config = ConfigDict(extra="allow")


class HistoryResponse(BaseModel):
    meter_id: str = Field(examples=["METER001"])
    resolution: Resolution = Field(description="the resolution answered: the finest still held for the range")
    note: str | None = Field(
        None, description="why the answer is at a coarser resolution than asked (archived months)"
    )
    table: str = Field(examples=["telemetry_aggregates"])
    start: str = Field(examples=["2025-10-26T00:00:00Z"])
    end: str = Field(examples=["2025-10-27T00:00:00Z"])
    fields: list[str] = Field(
        examples=[["battery_voltage_avg", "battery_voltage_min", "battery_voltage_max"]]
    )
    points: list[dict[str, float | int | str | None]] = Field(
        description="one object per bucket: ``bucket`` (ISO 8601 UTC) and every requested column",
        examples=[[{"bucket": "2025-10-26T04:27:00Z", "battery_soc_avg": 86.6, "import_power_max": 480.2}]],
    )


class ArchiveEntry(BaseModel):
    table: str = Field(examples=["telemetry_aggregates"])
    year: int = Field(examples=[2025])
    month: int = Field(examples=[10])
    object_key: str = Field(examples=["telemetry_aggregates/2025/10.csv.gz"])
    backend: str = Field(examples=["minio"])
    row_count: int = Field(examples=[4_464_000])
    size_bytes: int = Field(examples=[301_234_567])
    sha256: str
    first_at: str | None = Field(None, examples=["2025-10-01T00:00:00Z"])
    last_at: str | None = Field(None, examples=["2025-10-31T23:59:00Z"])
    schema_version: int
    archived_at: str
    download: str = Field(examples=["/telemetry/archive/2025/10?table=telemetry_aggregates"])


class HealthPoint(BaseModel):
    bucket: str = Field(description="start of the bucket, ISO 8601 UTC", examples=["2025-10-26T04:00:00Z"])
    minutes: int = Field(description="minute rows in the bucket", examples=[60])
    sample_count: int = Field(description="status messages in the bucket", examples=[60])
    rssi_avg: float | None = Field(None, description="dBm, weighted by sample_count", examples=[-67.5])
    rssi_min: float | None = Field(None, examples=[-80.0])
    wifi_disconnected_ratio: float | None = Field(None, description="share of status messages, 0..1")
    mqtt_disconnected_ratio: float | None = Field(None, description="share of status messages, 0..1")
    mqtt_attempts_max: int | None = None
    free_heap_min: int | None = Field(None, description="bytes", examples=[48_000])
    reboots: int = Field(description="uptime went backwards, summed", examples=[0])
    sensors_connected_min: int | None = None
    sensors_total: int | None = None
    uptime_last_ms: int | None = Field(None, description="uptime in the bucket's last status message")


class HealthHistory(BaseModel):
    meter_id: str = Field(examples=["METER001"])
    start: str = Field(examples=["2025-10-26T00:00:00Z"])
    end: str = Field(examples=["2025-10-27T00:00:00Z"])
    bucket: Literal["1m", "5m", "15m", "1h", "6h", "1d"] = Field(
        description="bucket width used (``auto`` picks the finest that gives a chart-sized series)"
    )
    timezone: str = Field(description="buckets of a day or less start on this zone's clock", examples=["UTC"])
    points: list[HealthPoint]
    events: list[Event] = Field(description="the meter's events in the range, oldest first")
    events_truncated: bool = Field(description="more events than returned: narrow the range")


class CompletenessPoint(BaseModel):
    bucket: str | None = Field(
        description="start of the bucket, ISO 8601 UTC (null for a range's total)",
        examples=["2025-10-26T04:00:00Z"],
    )
    minutes: int = Field(description="minute rows in the bucket", examples=[60])
    received: int = Field(description="readings stored", examples=[358])
    expected: int | None = Field(
        None, description="readings the meter issued, from seq; null: unknown (no seq)"
    )
    repaired: int | None = Field(None, description="readings stored after a re-send; null: unknown")
    missing: int | None = Field(None, description="expected readings not stored (yet); null: unknown")
    completeness: float | None = Field(
        None, description="share of the expected readings stored, 0..1; null: unknown", examples=[0.9944]
    )


class MeterCompleteness(BaseModel):
    meter_id: str = Field(examples=["METER001"])
    bucket: Literal["1h", "1d"]
    timezone: str = Field(description="days start at midnight of this zone", examples=["UTC"])
    start: str = Field(examples=["2025-10-26T00:00:00Z"])
    end: str = Field(examples=["2025-10-27T00:00:00Z"])
    threshold: float = Field(description="ENERLINK_COMPLETENESS_THRESHOLD", examples=[0.99])
    total: CompletenessPoint
    points: list[CompletenessPoint] = Field(description="buckets with minute rows, oldest first")


class FleetCompletenessPoint(CompletenessPoint):
    meters: int = Field(description="meters with minute rows in the bucket", examples=[1200])
    meters_with_seq: int = Field(description="meters whose completeness is known", examples=[1100])
    meters_below_threshold: int = Field(examples=[3])


class FleetCompleteness(BaseModel):
    bucket: Literal["1h", "1d"]
    timezone: str = Field(examples=["UTC"])
    start: str = Field(examples=["2025-10-26T00:00:00Z"])
    end: str = Field(examples=["2025-10-27T00:00:00Z"])
    threshold: float = Field(examples=[0.99])
    points: list[FleetCompletenessPoint]
