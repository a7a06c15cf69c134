"""Reading the broker's socket for the ingest: many packets per wake-up, PUBLISH without paho, a hard cap.

paho reads one packet per ``loop_read()`` with three or four ``recv`` calls (1 byte of command, the
length one byte at a time, then the body) and builds an ``MQTTMessage`` with its properties for each
one; aiomqtt calls it once per readable event. At fleet rates that per-message Python work was
most of the worker's time. :class:`Reader` replaces the socket reader once paho has opened the
socket (:meth:`Reader.attach`):

* one ``recv`` takes everything the kernel holds (up to :data:`FILL_MAX` bytes) into a buffer;
* complete PUBLISH packets at QoS 0/1 are decoded here (topic, packet id, flags, properties
  skipped, payload) and handed to ``on_publish``; a PUBACK saying delivered, without properties (the
  broker's answer to a confirmation or resend request the worker published) completes the message in
  paho directly (:func:`enerlink.mqtt_internals.puback_handler`); every other packet (CONNACK,
  SUBACK, PINGRESP, DISCONNECT, QoS 2 flows) is handed to paho whole: paho's ``_sock_recv`` is
  replaced by one that serves bytes from the buffer up to the end of that packet only (the *fence*),
  so paho's own state machine never holds a partial packet and the two never disagree about where a
  packet starts;
* end of stream or a socket error is handed to paho the same way, so paho runs its own disconnect
  path (aiomqtt's ``_disconnected`` future, reconnect in the worker).

Hard cap (what "does not buffer without bound" means here): the reader stops decoding as soon as
the caller's :attr:`Reader.full` says so (held messages or bytes at their cap), removes itself from
the event loop and lets TCP flow control hold the broker back (the kernel's receive buffer fills,
the broker's send buffer fills, Mosquitto keeps the rest in the session queue). :meth:`Reader.resume`
re-installs it and, because bytes already in the buffer (or in an SSL object) produce no new
readable event, schedules a read at once: that missing wake-up is what stalled the first attempt.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho

from enerlink import mqtt_internals

log = logging.getLogger(__name__)

FILL_MAX = 256 * 1024  # bytes taken from the socket per wake-up
_PUBLISH = 3
_PUBACK = 0x40  # the whole first byte: PUBACK has no flags


class Reader:
    """The event-loop reader of one paho client's socket (one connection)."""

    def __init__(
        self,
        client: paho.Client,
        *,
        on_publish: Callable[[str, bytes, int, int, bool], None],
        full: Callable[[], bool],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self._paho = client
        self._on_publish = on_publish
        self._full = full
        self._on_error = on_error
        self._loop = asyncio.get_running_loop()
        self._buf = bytearray()
        self._pos = 0  # start of the first packet not yet consumed
        self._fence = 0  # paho may read up to here
        self._eof = False  # the broker closed the stream, or the socket failed (``_error``)
        self._error: OSError | None = None
        self._fd = -1
        self._v5 = client.protocol == paho.MQTTv5
        self.paused = False
        self.pauses = 0
        self._scheduled = False
        self._on_puback = mqtt_internals.puback_handler(client)
        mqtt_internals.replace_socket_recv(client, self._paho_recv)

    def attach(self, sock: Any) -> None:
        """Take over the socket's reader from aiomqtt (call in the event loop, after aiomqtt's)."""
        fd: int = sock.fileno()
        if self._paho.socket() is not sock or fd < 0:
            return  # already closed (a failed connect): aiomqtt reports it
        self._fd = fd
        self._loop.add_reader(fd, self.read)

    # -- paho's view of the socket ----------------------------------------------------------------

    def _paho_recv(self, bufsize: int) -> bytes:
        available = self._fence - self._pos
        if available > 0:
            n = min(bufsize, available)
            data = bytes(self._buf[self._pos : self._pos + n])
            self._pos += n
            return data
        if self._error is not None:
            raise self._error
        if self._eof:
            return b""  # end of stream: paho's "connection lost"
        raise BlockingIOError

    def _paho_packet(self, end: int) -> None:
        """Let paho handle the packet in ``buf[pos:end]`` (exactly one packet)."""
        self._fence = end
        try:
            self._paho.loop_read()
        finally:
            self._fence = self._pos

    # -- the event-loop side ----------------------------------------------------------------------

    def read(self) -> None:
        """Readable socket (or a scheduled resume): fill the buffer, decode what is complete."""
        self._scheduled = False
        if self.paused:
            return
        try:
            more = self._fill()
            self._drain()
            if self._eof and not self.paused:
                self._paho_packet(self._pos)  # paho sees the end of stream / error
            elif more and not self.paused:
                self._schedule()  # FILL_MAX reached, or an SSL object may hold decrypted bytes
        except Exception as exc:  # the one boundary: any failure ends this connection
            self.pause()  # and this reader: nothing more is read from it
            self._on_error(exc)

    def _fill(self) -> bool:
        """Read what the socket holds; True when it stopped at :data:`FILL_MAX` (maybe more there)."""
        sock = self._paho.socket()
        if sock is None or self._eof:
            return False
        if self._pos:
            del self._buf[: self._pos]
            self._fence -= self._pos
            self._pos = 0
        got = 0
        while got < FILL_MAX:
            try:
                chunk = sock.recv(FILL_MAX)
            except (BlockingIOError, ssl.SSLWantReadError):
                break
            except ssl.SSLWantWriteError:
                mqtt_internals.request_write(self._paho)
                break
            except OSError as exc:
                self._eof, self._error = True, exc
                break
            if not chunk:
                self._eof = True
                break
            self._buf += chunk
            got += len(chunk)
        if got:
            mqtt_internals.note_bytes_received(self._paho)
        return got >= FILL_MAX

    def _drain(self) -> None:
        buf = self._buf
        end_of_data = len(buf)
        while not self.paused:
            pos = self._pos
            if end_of_data - pos < 2:
                return
            header = buf[pos]
            length, mult, i = 0, 1, pos + 1
            while True:
                if i >= end_of_data:
                    return  # length not complete yet
                byte = buf[i]
                length += (byte & 0x7F) * mult
                i += 1
                if not byte & 0x80:
                    break
                mult *= 128
                if mult > 128**3:
                    raise ConnectionError("malformed remaining length from the broker")
            end = i + length
            if end > end_of_data:
                return  # body not complete yet
            qos = (header >> 1) & 3
            if header >> 4 == _PUBLISH and qos < 2:
                if self._full():
                    self.pause()
                    return
                self._publish(header=header, qos=qos, start=i, end=end)
                self._pos = end
            elif header == _PUBACK and (
                length == 2 or (length == 3 and buf[i + 2] in mqtt_internals.PUBACK_DELIVERED)
            ):  # a confirmation or resend request delivered
                self._pos = end
                self._on_puback((buf[i] << 8) | buf[i + 1], buf[i + 2] if length == 3 else 0)
            else:
                self._paho_packet(end)
                if self._pos < end:
                    return  # paho stopped (disconnect)

    def _publish(self, *, header: int, qos: int, start: int, end: int) -> None:
        buf = self._buf
        topic_len = (buf[start] << 8) | buf[start + 1]
        i = start + 2
        topic = buf[i : i + topic_len].decode("utf-8", errors="replace")
        i += topic_len
        mid = 0
        if qos:
            mid = (buf[i] << 8) | buf[i + 1]
            i += 2
        if self._v5:
            props, mult = 0, 1
            while True:
                byte = buf[i]
                i += 1
                props += (byte & 0x7F) * mult
                if not byte & 0x80:
                    break
                mult *= 128
            i += props
        self._on_publish(topic, bytes(buf[i:end]), mid, qos, bool(header & 0x08))

    def pause(self) -> None:
        """Stop reading: TCP flow control holds the broker back (see the module docstring)."""
        if not self.paused:
            self.paused = True
            self.pauses += 1
            if self._fd >= 0:
                self._loop.remove_reader(self._fd)

    def resume(self) -> None:
        """Read again, starting with what is already buffered (no readable event will say so)."""
        if not self.paused:
            return
        self.paused = False
        if self._paho.socket() is None or self._fd < 0:
            return
        self._loop.add_reader(self._fd, self.read)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.read)
