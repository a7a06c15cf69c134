"""The meter simulator: physics, fleet, weather, scenarios, backfill and replay."""
