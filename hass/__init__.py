"""Home Assistant MQTT discovery for EnerLink meters (see :mod:`hass.service`)."""
