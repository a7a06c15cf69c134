"""Control of the simulated fleet over MQTT: commands to the fleet process and the state it publishes.

One simulated fleet per topic prefix (``enerlink edge --simulate`` or the one inside ``enerlink up``)
listens on :attr:`enerlink.schemas.wire.Topics.fleet_command` and publishes its :class:`FleetState`, retained,
on :attr:`enerlink.schemas.wire.Topics.fleet_state`: after every command (echoing the command's ``id``, with
``error`` set when it was refused), about once a second while it runs, and on connecting. Its MQTT
last will (and its clean exit) publish the state with ``online: false``.

Commands (unknown keys are refused; ``id`` is echoed in the answering state)::

    {"cmd": "start", "meters": 3, "interval_s": 5, "speed": 1, "id": "..."}   # omitted: as before
    {"cmd": "stop", "id": "..."}

``start`` while running with the same parameters changes nothing (the state is published again);
with other parameters it is refused (stop first). ``stop`` while stopped changes nothing.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_METERS = 10_000
MIN_INTERVAL_S = 0.5
MAX_INTERVAL_S = 3600.0
MAX_SPEED = 1000.0

FleetCommandName = Literal["start", "stop"]


class SimulationParams(BaseModel):
    """What a start may set; a field left out keeps the fleet's current (or configured) value."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    meters: int | None = Field(
        default=None, ge=1, le=MAX_METERS, description="generated fleet size (METER001..)"
    )
    interval_s: float | None = Field(
        default=None,
        ge=MIN_INTERVAL_S,
        le=MAX_INTERVAL_S,
        description="simulated seconds between a meter's data messages",
    )
    speed: float | None = Field(
        default=None, gt=0, le=MAX_SPEED, description="simulated seconds per real second (1 = real time)"
    )


class FleetCommand(SimulationParams):
    """A message on the fleet command topic."""

    cmd: FleetCommandName
    id: str | None = Field(default=None, max_length=128, description="echoed in the answering state")

    @model_validator(mode="after")
    def _stop_takes_no_parameters(self) -> Self:
        if self.cmd == "stop" and (self.meters, self.interval_s, self.speed) != (None, None, None):
            raise ValueError("stop takes no meters, interval_s or speed")
        return self


class FleetState(BaseModel):
    """The simulated fleet as its process last published it (retained)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    online: bool = Field(description="the fleet process is connected and takes commands")
    running: bool = Field(description="the meters publish (false: stopped, their presence offline)")
    meters: int = Field(default=0, ge=0, description="meters of the fleet")
    interval_s: float = Field(default=0.0, ge=0)
    speed: float = Field(default=0.0, ge=0)
    scenarios: dict[str, int] = Field(
        default_factory=dict, description="active scenario -> how many meters run it"
    )
    messages_sent: int = Field(default=0, ge=0, description="data messages since the process started")
    status_sent: int = Field(default=0, ge=0, description="status messages since the process started")
    fleet: str = Field(default="", description="generated (seed N) or the fleet file")
    client_id: str = Field(default="", description="MQTT client id of the fleet process")
    since: str | None = Field(default=None, description="when it last started or stopped (ISO 8601)")
    updated: str | None = Field(default=None, description="when this state was published (ISO 8601)")
    id: str | None = Field(default=None, description="the command this state answers")
    error: str | None = Field(default=None, description="why that command was refused")
