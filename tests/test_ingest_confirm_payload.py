"""The confirmation bytes the ingest writes directly are what the contract's model reads and writes; the
broker takes the window they are published with."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from enerlink.ingest.delivery import confirmation_at, confirmation_payload
from enerlink.ingest.mqtt_source import PUBLISH_WINDOW
from enerlink.schemas.delivery import MAX_CONFIRM_RANGES, MAX_SEQ, Confirmation

AT = datetime(2026, 12, 6, 5, 30, 1, 234000, tzinfo=UTC)
AT_JSON = confirmation_at(int(AT.timestamp() * 1000))


def _model(meter: str, through: int, ranges: list[tuple[int, int]]) -> Confirmation:
    return Confirmation(meterId=meter, through=through, ranges=ranges, at=AT)


@pytest.mark.parametrize(
    ("text", "through", "ranges"),
    [
        ("t:1765000000000;c:500;k:1765000001234;u:1765000002000", 500, []),  # the usual record
        ("t:1765000000000;c:1;u:1765000002000", 1, []),  # never confirmed yet
        ("t:1765000000000;c:7", 7, []),
        ("t:1765000000000;c:3;r:6-7;k:1765000001234;a:1;g:7", 3, [(6, 7)]),
        ("t:1765000000000;c:0;r:5000-5003,5007", 0, [(5000, 5003), (5007, 5007)]),
        ("t:1765000000000;c:12;r:20-30;e:1765000000000;z:12", 12, [(20, 30)]),
        (f"t:1765000000000;c:{MAX_SEQ}", MAX_SEQ, []),
    ],
)
def test_payload_is_the_models_confirmation(text: str, through: int, ranges: list[tuple[int, int]]) -> None:
    payload = confirmation_payload("METER-01.a_b", text, AT_JSON)
    parsed = Confirmation.model_validate_json(payload)
    assert parsed == _model("METER-01.a_b", through, ranges)
    assert payload == parsed.model_dump_json().encode()  # the very bytes the model writes


def test_only_the_newest_ranges_are_sent() -> None:
    ranges = [(10 * i, 10 * i + 1) for i in range(1, 101)]
    text = "t:1765000000000;c:2;r:" + ",".join(f"{a}-{b}" for a, b in ranges)
    parsed = Confirmation.model_validate_json(confirmation_payload("M1", text, AT_JSON))
    assert parsed.through == 2 and parsed.ranges == ranges[-MAX_CONFIRM_RANGES:]


@pytest.mark.parametrize(
    ("meter", "text"),
    [
        ("bad meter", "t:1;c:5"),  # not a meter id
        ("M1\n", "t:1;c:5"),
        ('M1","through":9', "t:1;c:5"),
        ("M1", f"t:1;c:{MAX_SEQ + 1}"),  # beyond what a seq may be
        ("M1", f"t:1;c:3;r:5-{MAX_SEQ + 1}"),
        ("M1", "t:1;c:3;r:4-6"),  # adjacent to through: not a record the scripts write
    ],
)
def test_what_no_confirmation_can_carry_is_refused(meter: str, text: str) -> None:
    with pytest.raises(ValueError):
        confirmation_payload(meter, text, AT_JSON)


def test_the_broker_takes_the_ingests_publish_window() -> None:
    """Mosquitto discards what a client sends beyond its Receive Maximum (``max_inflight_messages``)
    while the client library reports success: the project's broker must take the ingest's whole window."""
    conf = (Path(__file__).resolve().parents[1] / "mosquitto" / "mosquitto.conf").read_text(encoding="utf-8")
    values = [int(line.split()[1]) for line in conf.splitlines() if line.startswith("max_inflight_messages ")]
    assert values == [values[0]] and values[0] >= PUBLISH_WINDOW, values
