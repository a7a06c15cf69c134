"""How a data reading is kept as a member of its meter's sorted sets in Redis (the stored snapshot).

Two functions are the whole contract; everything that writes or reads a stored snapshot goes through
them:

* :func:`encode_snapshot` turns a data message as received (JSON bytes) into the member that is
  stored. It is deterministic: the same message always gives the same member, so a redelivered or
  re-sent reading lands on the member already there and is not stored twice.
* :func:`decode_snapshot` gives back the message as JSON bytes: the same fields with the same numbers
  (extra fields the firmware sends are kept).

Today the member is the message as received.
"""

from __future__ import annotations


def encode_snapshot(payload: bytes) -> bytes:
    """The stored member of a data message (its JSON bytes as received)."""
    return payload


def decode_snapshot(member: bytes) -> bytes:
    """The data message (JSON bytes) of a stored member."""
    return member
