"""The EnerLink message contract (pydantic models, JSON Schema) and every wire name."""

from enerlink.schemas.telemetry import DataMessage, StatusMessage
from enerlink.schemas.wire import Buckets, Keys, Tables, Topics

__all__ = ["Buckets", "DataMessage", "Keys", "StatusMessage", "Tables", "Topics"]
