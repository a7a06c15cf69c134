"""Redis -> PostgreSQL: per-minute statistics of every meter, rollups and events."""
