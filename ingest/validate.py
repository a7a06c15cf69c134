"""Turning one MQTT message into something to store, or a rejection with a reason.

The payload is validated once, by pydantic's JSON fast path (``model_validate_json`` on the bytes),
against the contract in :mod:`enerlink.schemas.telemetry`. What is stored is the payload exactly as received
(unknown fields kept), so a redelivered message is byte-for-byte the same sorted-set member.

Rejection reasons are a small closed set (they label metrics and count in Redis):
``payload_too_large``, ``not_json``, ``not_object``, ``not_finite``, ``invalid_meter_id``,
``missing_field``, ``wrong_type``, ``invalid_value``, ``out_of_range``, ``bad_datetime``,
``future_datetime``, ``unknown_topic``, ``invalid_ack``, and ``rate_limited`` (set by the worker,
:mod:`enerlink.ingest.limits`).

``Topics.resent`` (readings a meter republishes from its log) is validated exactly like ``Topics.data``
(the outcome is marked ``resent``). A meter's command ack (``Topics.command_ack``) becomes a
:class:`ResendAck` when it answers a ``resend`` request (:mod:`enerlink.schemas.delivery`), :class:`Ignored`
for
any other command, or ``invalid_ack`` when it is malformed or names another meter.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from enerlink.schemas.delivery import RESEND_COMMAND, ResendResult
from enerlink.schemas.telemetry import METER_ID_PATTERN, DataMessage, MeterId, StatusMessage, epoch_ms
from enerlink.schemas.wire import Topics

REASONS: tuple[str, ...] = (
    "payload_too_large",
    "not_json",
    "not_object",
    "not_finite",
    "invalid_meter_id",
    "missing_field",
    "wrong_type",
    "invalid_value",
    "out_of_range",
    "bad_datetime",
    "future_datetime",
    "unknown_topic",
    "invalid_ack",
    "rate_limited",
)
RATE_LIMITED = "rate_limited"
INVALID_ACK = "invalid_ack"
STORE_REFUSED = "store_refused"  # the store script failed on the message (see enerlink.ingest.refused)

_METER_ID = re.compile(METER_ID_PATTERN)
_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
_VALUE_ERRORS = {"literal_error", "string_pattern_mismatch", "string_too_long", "string_too_short"}


@dataclass(frozen=True, slots=True)
class Measurement:
    """A valid data or status message, ready to store."""

    kind: Literal["data", "status"]
    meter_id: str
    at_ms: int  # message datetime, epoch ms
    seq: int | None
    payload: bytes
    resent: bool = False  # from ``Topics.resent``


@dataclass(frozen=True, slots=True)
class ResendAck:
    """A meter's answer to a resend request: ``not_held`` when ``ok``, else ``error``."""

    meter_id: str
    command_id: str | None
    ok: bool
    not_held: list[tuple[int, int]]
    error: str
    resent: int = 0


@dataclass(frozen=True, slots=True)
class Ignored:
    """A message nothing is done with (the ack of a command other than ``resend``)."""

    topic: str


@dataclass(frozen=True, slots=True)
class Presence:
    """An online/offline marker from ``{prefix}/meters/{meterId}/presence``."""

    meter_id: str
    online: bool
    payload: bytes


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    detail: str
    topic: str
    payload: bytes
    meter_id: str = ""  # known for ``rate_limited`` only


Outcome = Measurement | Presence | Rejection | ResendAck | Ignored


class _Ack(BaseModel):
    """The envelope of a command ack (``edge``: ``{"meterId","datetime","cmd","id","ok","result"}``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    meterId: MeterId
    cmd: str | None = None
    id: str | None = Field(default=None, max_length=128)
    ok: StrictBool
    result: dict[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Validator:
    """Classifies messages of one topic prefix; ``now_ms`` is passed in for the future-date rule."""

    topics: Topics
    max_payload: int = 262_144
    max_future_ms: int = 86_400_000

    def classify(self, *, topic: str, payload: bytes, now_ms: int) -> Outcome:
        if len(payload) > self.max_payload:
            return self._reject(
                "payload_too_large", f"{len(payload)} bytes > {self.max_payload}", topic, payload
            )
        if topic == self.topics.data:
            return self._measurement("data", topic, payload, now_ms)
        if topic == self.topics.status:
            return self._measurement("status", topic, payload, now_ms)
        if topic == self.topics.resent:
            return self._measurement("data", topic, payload, now_ms, resent=True)
        meter_id = self.topics.meter_of(topic, "presence")
        if meter_id is not None:
            return self._presence(meter_id, topic, payload)
        meter_id = self.topics.meter_of(topic, "cmd/ack")
        if meter_id is not None:
            return self._ack(meter_id, topic, payload)
        return self._reject("unknown_topic", "not a data, status or presence topic", topic, payload)

    def _measurement(
        self,
        kind: Literal["data", "status"],
        topic: str,
        payload: bytes,
        now_ms: int,
        *,
        resent: bool = False,
    ) -> Measurement | Rejection:
        model = DataMessage if kind == "data" else StatusMessage
        try:
            message = model.model_validate_json(payload)
        except ValidationError as exc:
            reason, detail = _explain(exc, payload)
            return self._reject(reason, detail, topic, payload)
        at_ms = epoch_ms(message.datetime)
        if at_ms > now_ms + self.max_future_ms:
            detail = (
                f"datetime {message.datetime.isoformat()} is more than {self.max_future_ms // 1000} s ahead"
            )
            return self._reject("future_datetime", detail, topic, payload)
        seq = message.seq if isinstance(message, DataMessage) else None
        return Measurement(
            kind=kind, meter_id=message.meterId, at_ms=at_ms, seq=seq, payload=payload, resent=resent
        )

    def _presence(self, meter_id: str, topic: str, payload: bytes) -> Presence | Rejection:
        if not _METER_ID.match(meter_id):
            return self._reject("invalid_meter_id", "meter id in the presence topic", topic, payload)
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            return self._reject("not_json", str(exc), topic, payload)
        if not isinstance(body, dict):
            return self._reject("not_object", "presence payload must be a JSON object", topic, payload)
        online = body.get("online")
        if not isinstance(online, bool):
            reason = "missing_field" if online is None else "wrong_type"
            return self._reject(reason, "presence: 'online' must be true or false", topic, payload)
        return Presence(meter_id=meter_id, online=online, payload=payload)

    def _ack(self, meter_id: str, topic: str, payload: bytes) -> ResendAck | Ignored | Rejection:
        try:
            ack = _Ack.model_validate_json(payload)
        except ValidationError as exc:
            error = exc.errors(include_url=False, include_context=False, include_input=False)[0]
            where = ".".join(str(part) for part in error["loc"]) or "(message)"
            return self._reject(INVALID_ACK, f"{where}: {error['msg']}", topic, payload)
        if ack.meterId != meter_id:
            detail = f"ack from {ack.meterId!r} on the topic of {meter_id!r}"
            return self._reject(INVALID_ACK, detail, topic, payload)
        if ack.cmd != RESEND_COMMAND:
            return Ignored(topic=topic)
        if not ack.ok:
            return ResendAck(
                meter_id=meter_id, command_id=ack.id, ok=False, not_held=[], error=(ack.error or "")[:300]
            )
        if ack.result is None:
            return self._reject(INVALID_ACK, "result: missing in a resend ack", topic, payload)
        try:
            result = ResendResult.model_validate(ack.result)
        except ValidationError as exc:
            error = exc.errors(include_url=False, include_context=False, include_input=False)[0]
            where = ".".join(str(part) for part in ("result", *error["loc"]))
            return self._reject(INVALID_ACK, f"{where}: {error['msg']}", topic, payload)
        return ResendAck(
            meter_id=meter_id,
            command_id=ack.id,
            ok=True,
            not_held=list(result.not_held),
            error="",
            resent=result.resent,
        )

    @staticmethod
    def _reject(reason: str, detail: str, topic: str, payload: bytes) -> Rejection:
        return Rejection(reason=reason, detail=detail[:300], topic=topic, payload=payload)


def _explain(exc: ValidationError, payload: bytes) -> tuple[str, str]:
    """The rejection reason of the first error (fields are checked in contract order, meterId first)."""
    error = exc.errors(include_url=False, include_context=False, include_input=False)[0]
    kind, loc = error["type"], error["loc"]
    where = ".".join(str(part) for part in loc) or "(message)"
    detail = f"{where}: {error['msg']}"
    if kind == "json_invalid":
        return ("not_finite" if _is_nonfinite_json(payload) else "not_json"), detail
    if not loc:
        return "not_object", detail
    if loc[0] == "meterId":
        return "invalid_meter_id", detail
    if kind == "missing":
        return "missing_field", detail
    if kind == "finite_number":
        return "not_finite", detail
    if loc[0] == "datetime":
        return "bad_datetime", detail
    if kind in _RANGE_ERRORS:
        return "out_of_range", detail
    if kind in _VALUE_ERRORS:
        return "invalid_value", detail
    return "wrong_type", detail


def _is_nonfinite_json(payload: bytes) -> bool:
    """True when the payload is JSON only once NaN/Infinity literals are allowed (Python's reading)."""
    try:
        json.loads(payload)
    except (ValueError, RecursionError):
        return False
    return True
