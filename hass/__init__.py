"""Home Assistant MQTT discovery for EnerLink meters (see :mod:`enerlink.hass.service`)."""
