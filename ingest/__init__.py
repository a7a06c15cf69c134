"""The ingest worker: MQTT -> Redis, every message stored exactly once (see
:mod:`enerlink.ingest.service`)."""
