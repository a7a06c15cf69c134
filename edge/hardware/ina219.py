"""Register-level INA219 (TI datasheet SBOS448G), behind the I2C bus the Adafruit driver uses.

Registers (16 bit, big-endian, selected by a pointer byte):

====  ==============  =========================================================================
0x00  Configuration   RST(15) BRNG(13) PG(12:11) BADC(10:7) SADC(6:3) MODE(2:0); reset 0x399F
0x01  Shunt voltage   signed, LSB 10 uV, clipped to the PGA range (+-40/80/160/320 mV)
0x02  Bus voltage     bits 15:3 = V / 4 mV; bit 1 CNVR (conversion ready); bit 0 OVF
0x03  Power           Current x Bus / 5000 (LSB = 20 x current LSB); reading it clears CNVR
0x04  Current         Shunt x Calibration / 4096, signed (LSB = the current LSB chosen)
0x05  Calibration     bit 0 reads 0; 0 disables current and power (both read 0)
====  ==============  =========================================================================

OVF is set when the shunt voltage is outside the PGA range or the current/power arithmetic
overflows 16 bits. The "true" bus voltage (V) and current (A) through the shunt come from a
callable, asked at each conversion; a conversion happens on a read when the previous one is older
than the configured conversion time (continuous modes) or after a triggered-mode write.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

CONFIG, SHUNT, BUS, POWER, CURRENT, CALIBRATION = range(6)
CONFIG_RESET = 0x399F
_PGA_LIMIT_UV = (40_000, 80_000, 160_000, 320_000)
# Conversion time (s) per ADC setting (BADC/SADC 4-bit field), datasheet table 5.
_ADC_TIME = {0: 84e-6, 1: 148e-6, 2: 276e-6, 3: 532e-6}
_ADC_TIME.update({8: 532e-6, 9: 1.06e-3, 10: 2.13e-3, 11: 4.26e-3, 12: 8.51e-3})
_ADC_TIME.update({13: 17.02e-3, 14: 34.05e-3, 15: 68.10e-3})


@dataclass(frozen=True, slots=True)
class Reading:
    """What the chip is exposed to: bus voltage (V, at IN-) and current through the shunt (A)."""

    bus_v: float
    current_a: float


TruthSource = Callable[[], Reading]


def _s16(value: int) -> int:
    return value - 0x10000 if value & 0x8000 else value


def _u16(value: int) -> int:
    return value & 0xFFFF


class EmulatedINA219:
    """One INA219 with a physical shunt of ``shunt_ohm`` (0.1 ohm on the Adafruit breakout)."""

    def __init__(
        self,
        truth: TruthSource,
        *,
        shunt_ohm: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.truth = truth
        self.shunt_ohm = shunt_ohm
        self._clock = clock
        self._pointer = 0
        self.reset()

    def reset(self) -> None:
        self.config = CONFIG_RESET
        self.calibration = 0
        self._shunt_raw = 0
        self._bus_raw = 0  # in 4 mV units (bits 15:3)
        self._shunt_overflow = False
        self._cnvr = False
        self._last_conversion: float | None = None
        self._triggered_pending = False

    # --- configuration fields ---------------------------------------------------------------

    @property
    def mode(self) -> int:
        return self.config & 0x7

    @property
    def pga(self) -> int:
        return (self.config >> 11) & 0x3

    @property
    def bus_range_v(self) -> int:
        return 32 if self.config & 0x2000 else 16

    def _conversion_time(self) -> float:
        badc = (self.config >> 7) & 0xF
        sadc = (self.config >> 3) & 0xF
        return _ADC_TIME.get(badc, 532e-6) + _ADC_TIME.get(sadc, 532e-6)

    # --- conversion ---------------------------------------------------------------------------

    def _maybe_convert(self) -> None:
        mode = self.mode
        if mode in (0, 4):  # power-down, ADC off: registers hold their last values
            return
        now = self._clock()
        continuous = mode >= 5
        due = self._last_conversion is None or now - self._last_conversion >= self._conversion_time()
        if (continuous and due) or (not continuous and self._triggered_pending):
            self._convert(now)
            self._triggered_pending = False

    def _convert(self, now: float) -> None:
        reading = self.truth()
        mode = self.mode & 0x3  # 1/5 shunt, 2/6 bus, 3/7 both
        if mode in (1, 3):
            limit = _PGA_LIMIT_UV[self.pga]
            raw = round(reading.current_a * self.shunt_ohm * 1e5)  # LSB 10 uV
            self._shunt_overflow = abs(raw) > limit // 10
            self._shunt_raw = max(-limit // 10, min(limit // 10, raw))
        if mode in (2, 3):
            volts = max(0.0, min(float(self.bus_range_v), reading.bus_v))
            self._bus_raw = min(0x1FFF, round(volts / 0.004))
        self._last_conversion = now
        self._cnvr = True

    def _current_raw(self) -> tuple[int, bool]:
        """Current register (signed) and whether the arithmetic overflowed 16 bits."""
        value = (
            (self._shunt_raw * self.calibration) // 4096
            if self._shunt_raw >= 0
            else -((-self._shunt_raw * self.calibration) // 4096)
        )
        if value > 32767 or value < -32768:
            return (32767 if value > 0 else -32768), True
        return value, False

    def _power_raw(self) -> tuple[int, bool]:
        current, overflow = self._current_raw()
        value = abs(current) * (self._bus_raw) // 5000
        if value > 0xFFFF:
            return 0xFFFF, True
        return value, overflow

    def overflow(self) -> bool:
        return self._shunt_overflow or self._power_raw()[1]

    def register(self, index: int) -> int:
        """The 16-bit value a read of register ``index`` returns (does not clear CNVR)."""
        if index == CONFIG:
            return self.config
        if index == SHUNT:
            return _u16(self._shunt_raw)
        if index == BUS:
            return (self._bus_raw << 3) | (0x2 if self._cnvr else 0) | (0x1 if self.overflow() else 0)
        if index == POWER:
            return self._power_raw()[0] if self.calibration else 0
        if index == CURRENT:
            return _u16(self._current_raw()[0]) if self.calibration else 0
        if index == CALIBRATION:
            return self.calibration
        return 0

    # --- I2C --------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not data:
            return  # address probe
        self._pointer = data[0]
        if len(data) >= 3:
            self._write_register(self._pointer, (data[1] << 8) | data[2])

    def _write_register(self, index: int, value: int) -> None:
        if index == CONFIG:
            if value & 0x8000:
                self.reset()
                return
            self.config = value & 0x3FFF
            if 1 <= self.mode <= 3:
                self._triggered_pending = True  # a write in triggered mode starts one conversion
        elif index == CALIBRATION:
            self.calibration = value & 0xFFFE

    def read(self, length: int) -> bytes:
        index = self._pointer
        if index in (SHUNT, BUS, POWER, CURRENT):
            self._maybe_convert()
        value = self.register(index)
        if index == POWER:
            self._cnvr = False
        out = bytes([(value >> 8) & 0xFF, value & 0xFF])
        return (out * ((length + 1) // 2))[:length]
