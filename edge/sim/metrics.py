"""Prometheus metrics of the simulator (own registry: ``enerlink up`` runs several services)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass(slots=True)
class SimMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    messages: Counter = field(init=False)
    commands: Counter = field(init=False)
    step_seconds: Histogram = field(init=False)
    meters: Gauge = field(init=False)
    skipped: Gauge = field(init=False)

    def __post_init__(self) -> None:
        r = self.registry
        self.messages = Counter(
            "enerlink_sim_messages", "messages handed to the publisher", ["kind"], registry=r
        )
        self.commands = Counter("enerlink_sim_commands", "commands handled", ["outcome"], registry=r)
        self.step_seconds = Histogram(
            "enerlink_sim_step_seconds",
            "one fleet step: physics + messages + publish",
            registry=r,
            buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10),
        )
        self.meters = Gauge("enerlink_sim_meters", "simulated meters", registry=r)
        self.skipped = Gauge(
            "enerlink_sim_skipped_steps", "steps skipped because publishing fell behind", registry=r
        )
