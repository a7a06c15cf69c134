"""The I2C bus interface the Adafruit drivers use, and an emulated bus that hosts emulated chips.

The drivers (through ``adafruit_bus_device.I2CDevice``) need only ``try_lock``, ``unlock``,
``writeto(addr, buf, start=, end=)``, ``writeto_then_readfrom(addr, out, in, out_start=, out_end=,
in_start=, in_end=)`` and ``readfrom_into(addr, buf, start=, end=)`` (its probe). On a Pi that is
Blinka's ``busio.I2C``; here it is :class:`EmulatedBus`. An absent chip raises
``OSError(errno.EREMOTEIO)`` ("Remote I/O error"), exactly as Linux's i2c-dev does on a NACK.
"""

from __future__ import annotations

import errno
import os
import threading
from typing import Protocol

from smbus2 import SMBus


class Chip(Protocol):
    """A device on the emulated bus: raw bytes in, raw bytes out (register pointer semantics)."""

    def write(self, data: bytes) -> None: ...

    def read(self, length: int) -> bytes: ...


def nack(address: int) -> OSError:
    return OSError(errno.EREMOTEIO, f"Remote I/O error (no ACK from 0x{address:02x})")


class EmulatedBus:
    """An I2C bus with emulated chips on it; chips can be detached/attached to emulate loss."""

    def __init__(self) -> None:
        self._chips: dict[int, Chip] = {}
        self._present: set[int] = set()
        self._lock = threading.Lock()
        self._mutex = threading.RLock()
        self.transactions = 0

    def add(self, address: int, chip: Chip) -> None:
        self._chips[address] = chip
        self._present.add(address)

    def chip(self, address: int) -> Chip:
        return self._chips[address]

    def detach(self, address: int) -> None:
        """The chip stops answering (wire pulled, chip dead): every transfer NACKs."""
        self._present.discard(address)

    def attach(self, address: int) -> None:
        if address in self._chips:
            self._present.add(address)

    def scan(self) -> list[int]:
        return sorted(self._present)

    # --- busio.I2C interface ---------------------------------------------------------------

    def try_lock(self) -> bool:
        return self._lock.acquire(blocking=False)

    def unlock(self) -> None:
        self._lock.release()

    def deinit(self) -> None:
        return None

    def _device(self, address: int) -> Chip:
        self.transactions += 1
        if address not in self._present:
            raise nack(address)
        return self._chips[address]

    def writeto(
        self, address: int, buffer: bytes | bytearray, *, start: int = 0, end: int | None = None
    ) -> None:
        with self._mutex:
            self._device(address).write(bytes(buffer[start:end]))

    def readfrom_into(
        self, address: int, buffer: bytearray, *, start: int = 0, end: int | None = None
    ) -> None:
        with self._mutex:
            stop = len(buffer) if end is None else end
            data = self._device(address).read(stop - start)
            buffer[start:stop] = data

    def writeto_then_readfrom(
        self,
        address: int,
        buffer_out: bytes | bytearray,
        buffer_in: bytearray,
        *,
        out_start: int = 0,
        out_end: int | None = None,
        in_start: int = 0,
        in_end: int | None = None,
    ) -> None:
        with self._mutex:
            chip = self._device(address)
            chip.write(bytes(buffer_out[out_start:out_end]))  # copy first: drivers reuse one buffer
            stop = len(buffer_in) if in_end is None else in_end
            buffer_in[in_start:stop] = chip.read(stop - in_start)


def smbus_scan(bus_number: int = 1, addresses: range = range(0x03, 0x78)) -> list[int]:
    """Which addresses ACK on a real bus (``/dev/i2c-N``), the way ``i2cdetect`` probes them."""
    found: list[int] = []
    with SMBus(bus_number) as bus:
        for address in addresses:
            try:
                bus.read_byte(address)
            except OSError:
                continue
            found.append(address)
    return found


def open_board_bus() -> object:
    """Blinka's ``board.I2C()`` on a Pi (needs ``BLINKA_SKIP_DEPENDENCY_CHECK=1`` and gpiod 2.x)."""

    os.environ.setdefault("BLINKA_SKIP_DEPENDENCY_CHECK", "1")
    try:
        import board  # Blinka (the [edge] extra) exists on a Pi only
    except (ImportError, RuntimeError) as exc:  # Blinka raises RuntimeError on unknown boards
        raise RuntimeError(f"cannot open the board's I2C bus through Blinka: {exc}") from exc
    return board.I2C()
