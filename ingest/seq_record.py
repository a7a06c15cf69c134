"""The per-meter seq record (``Keys.seq_record(meter)``): which ``seq`` the pipeline holds for a meter.

One short string per meter (tens of bytes while nothing is missing), written only by Lua scripts
(:file:`seq_record.lua` holds the functions; it is prepended to every script that touches the record):

``t:<ms>;c:<through>;r:<ranges>;k:<ms>;u:<ms>;a:<attempts>;g:<seq>;e:<ms>;z:<seq>`` (fields absent
when 0 or empty), e.g.
``t:1765000000000;c:500;r:503-900,902;k:1765000001234``

* ``t``: the newest message datetime (epoch ms) recorded; a ``seq`` lower than the highest known one on
  a newer datetime means the meter restarted its ``seq`` (re-flash): the record starts again;
* ``c``: every ``seq`` from 1 to ``c`` is *known*: stored in Redis, or declared not held by the meter
  (a resend ack's ``not_held``; never asked for again), or given up (see below). This is the
  confirmation's ``through``;
* ``r``: known ranges beyond ``c`` (``a-b``, or ``a`` for a single seq), ascending, never adjacent; the
  gaps between them (and between ``c`` and the first, when ``c > 0``) are the *holes* gap repair asks for.
  A record first seen at seq 5000 has ``c:0;r:5000-...``: nothing below its first range is a hole;
* ``k``: when its last confirmation was claimed (Redis ms): the next one waits one interval;
* ``u``: when the meter was scheduled in ``Keys.confirm_due`` after that claim (later messages skip the
  ``ZADD``; absent = not yet);
* ``a``: resend requests sent since the record last had no hole (the backoff's attempt);
* ``g``: holes at or below this seq are old enough to ask for (the newest seq when the holes were
  noticed, or at the previous request): out-of-order arrival gets the grace period;
* ``e``, ``z``: the datetime and seq of the message that restarted the record: a message older than
  ``e`` with a seq of at least ``z`` is from the meter's previous life and is not recorded (stored all
  the same); one with a lower seq is taken as an out-of-order reading of the new life.

At most 256 ranges are kept: beyond, the oldest holes are given up (counted, logged). Every data
message with a ``seq`` is added after it is stored, in the same atomic script as the store, and a
duplicate adds too (idempotent), so the record never claims what Redis does not hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

MAX_RANGES = 256


def script(name: str) -> str:
    """``name`` (a Lua file of this package) with the record's functions in front of it."""
    files = resources.files(__package__ or "enerlink.ingest")
    prelude = files.joinpath("seq_record.lua").read_text(encoding="utf-8")
    return prelude + "\n" + files.joinpath(name).read_text(encoding="utf-8")


def parse_ranges(text: str) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for token in text.split(","):
        if not token:
            continue
        first, _, last = token.partition("-")
        out.append((int(first), int(last or first)))
    return out


def ranges_text(ranges: list[tuple[int, int]]) -> str:
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges)


@dataclass(frozen=True, slots=True)
class SeqRecord:
    newest_ms: int = 0
    through: int = 0
    ranges: list[tuple[int, int]] = field(default_factory=list)
    confirmed_ms: int = 0
    attempts: int = 0
    asked_below: int = 0
    restarted_ms: int = 0
    restarted_seq: int = 0

    @classmethod
    def parse(cls, text: str | bytes) -> SeqRecord:
        if isinstance(text, bytes):
            text = text.decode()
        fields: dict[str, str] = {}
        for part in text.split(";"):
            key, _, value = part.partition(":")
            fields[key] = value
        return cls(
            newest_ms=int(fields.get("t") or 0),
            through=int(fields.get("c") or 0),
            ranges=parse_ranges(fields.get("r", "")),
            confirmed_ms=int(fields.get("k") or 0),
            attempts=int(fields.get("a") or 0),
            asked_below=int(fields.get("g") or 0),
            restarted_ms=int(fields.get("e") or 0),
            restarted_seq=int(fields.get("z") or 0),
        )

    def holes(self) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        cursor = self.through
        for i, (a, b) in enumerate(self.ranges):
            if cursor > 0 or i > 0:
                out.append((cursor + 1, a - 1))
            cursor = b
        return out
