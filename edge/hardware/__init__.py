"""The edge's hardware path: the I2C bus, INA219 and MAX17048 through the Adafruit drivers (or
register-level emulations of both chips), 10 Hz sampling with trapezoidal energy, sensor loss and
recovery, and the runner behind ``enerlink edge --hardware/--emulate-hardware``."""
