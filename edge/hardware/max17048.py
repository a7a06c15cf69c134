"""Register-level MAX17048 fuel gauge (Maxim/ADI datasheet 19-6171), as the Adafruit driver sees it.

A byte-addressed register file (16-bit registers, big-endian, auto-incrementing reads, so the
driver's single-byte reads of 0x06, 0x0B, 0x14-0x1A work as on the chip):

====  =======  ===========================================================================
0x02  VCELL    78.125 uV / LSB (read-only)
0x04  SOC      1/256 % / LSB (read-only)
0x06  MODE     Quick-Start(14) EnSleep(13) HibStat(12)
0x08  VERSION  0x0012 (read-only; the driver requires VERSION & 0xFFF0 == 0x0010)
0x0A  HIBRT    hibernate thresholds, reset 0x8030
0x0C  CONFIG   RCOMP(15:8) SLEEP(7) ALSC(6) ALRT(5) ATHD(4:0), reset 0x971C
0x14  VALRT    voltage alert min/max, 20 mV / LSB, reset 0x00FF
0x16  CRATE    signed, 0.208 %/h / LSB (read-only)
0x18  VRESET   VRESET(15:9) Dis(8) / ID(7:0) = 0x96
0x1A  STATUS   RI(8) VH(9) VL(10) VR(11) HD(12) SC(13) EnVR(14); RI set after reset
0xFE  CMD      0x5400 = power-on reset: the chip resets and does not ACK the write
====  =======  ===========================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from enerlink.edge.hardware.bus import nack

VCELL, SOC, MODE, VERSION, HIBRT, CONFIG = 0x02, 0x04, 0x06, 0x08, 0x0A, 0x0C
VALRT, CRATE, VRESET, STATUS, CMD = 0x14, 0x16, 0x18, 0x1A, 0xFE
_READ_ONLY = {VCELL, VCELL + 1, SOC, SOC + 1, VERSION, VERSION + 1, CRATE, CRATE + 1, VRESET + 1}
_RESET = {MODE: 0x0000, VERSION: 0x0012, HIBRT: 0x8030, CONFIG: 0x971C, VALRT: 0x00FF}
_RESET.update({VRESET: 0x9696, STATUS: 0x0100})


@dataclass(frozen=True, slots=True)
class CellState:
    """What the gauge measures and estimates: cell voltage (V), SOC (%), charge rate (%/h)."""

    voltage_v: float
    soc_pct: float
    crate_pct_per_h: float


CellSource = Callable[[], CellState]


class EmulatedMAX17048:
    def __init__(self, truth: CellSource, *, address: int = 0x36) -> None:
        self.truth = truth
        self.address = address
        self._pointer = 0
        self.memory = bytearray(256)
        self.resets = 0
        self.reset()

    def reset(self) -> None:
        self.memory = bytearray(256)
        for register, value in _RESET.items():
            self._put(register, value)
        self.resets += 1

    def _put(self, register: int, value: int) -> None:
        self.memory[register] = (value >> 8) & 0xFF
        self.memory[register + 1] = value & 0xFF

    def word(self, register: int) -> int:
        return (self.memory[register] << 8) | self.memory[register + 1]

    def _measure(self) -> None:
        state = self.truth()
        self._put(VCELL, max(0, min(0xFFFF, round(state.voltage_v / 78.125e-6))))
        self._put(SOC, max(0, min(0xFFFF, round(state.soc_pct * 256))))
        crate = max(-32768, min(32767, round(state.crate_pct_per_h / 0.208)))
        self._put(CRATE, crate & 0xFFFF)

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._pointer = data[0]
        payload = data[1:]
        if self._pointer == CMD and len(payload) >= 2:
            if (payload[0] << 8) | payload[1] == 0x5400:
                self.reset()
                raise nack(self.address)  # the real chip resets before it can ACK
            return
        for offset, byte in enumerate(payload):
            register = (self._pointer + offset) & 0xFF
            if register in _READ_ONLY:
                continue
            # STATUS bits are cleared by writing 0; its unused top bit always reads 0.
            self.memory[register] = byte & 0x7F if register == STATUS else byte

    def read(self, length: int) -> bytes:
        if self._pointer <= SOC + 1 or CRATE <= self._pointer <= CRATE + 1:
            self._measure()
        start = self._pointer
        return bytes(self.memory[(start + i) & 0xFF] for i in range(length))
