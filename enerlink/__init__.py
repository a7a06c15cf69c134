"""EnerLink: edge gateway and ingestion pipeline for smart energy meters."""

__version__ = "0.1.0"
