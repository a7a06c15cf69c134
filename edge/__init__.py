"""The edge: meter-side gateway (sensors, counters, store-and-forward MQTT publisher)."""
