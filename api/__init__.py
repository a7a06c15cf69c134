"""HTTP API, live WebSocket and dashboard: the read side of EnerLink."""
