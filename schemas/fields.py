"""The data message's fields, flattened to ``{subsystem}_{field}`` column names.

Derived from the models once, so the aggregator's columns can never drift from the contract.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from enerlink.schemas.telemetry import MeterData

FieldKind = Literal["number", "counter", "bool", "enum"]


@dataclass(frozen=True, slots=True)
class Field:
    subsystem: str  # key in the message's ``data`` object, e.g. "import"
    name: str  # key inside the subsystem, e.g. "power"
    kind: FieldKind
    #: an enum field's values, in the contract's order (the labels of its PostgreSQL enum type)
    values: tuple[str, ...] = ()

    @property
    def column(self) -> str:
        """Column stem, e.g. ``import_power`` or ``net_grid_net_power``."""
        return f"{self.subsystem}_{self.name}"


def _kind(annotation: object, description: str | None) -> FieldKind:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "enum"
    if annotation is bool:
        return "bool"
    if origin is typing.Annotated:
        return _kind(typing.get_args(annotation)[0], description)
    if isinstance(annotation, types.UnionType):
        raise TypeError(f"unexpected optional field type {annotation!r}")
    if description and "counter" in description:
        return "counter"
    return "number"


def _fields() -> tuple[Field, ...]:
    out: list[Field] = []
    for attr, info in MeterData.model_fields.items():
        sub_model = info.annotation
        assert isinstance(sub_model, type) and issubclass(sub_model, BaseModel)
        subsystem = info.alias or attr
        for name, sub_info in sub_model.model_fields.items():
            kind = _kind(sub_info.annotation, sub_info.description)
            values = tuple(typing.get_args(sub_info.annotation)) if kind == "enum" else ()
            out.append(Field(subsystem=subsystem, name=name, kind=kind, values=values))
    return tuple(out)


DATA_FIELDS: tuple[Field, ...] = _fields()
NUMERIC_FIELDS: tuple[Field, ...] = tuple(f for f in DATA_FIELDS if f.kind in ("number", "counter"))
BOOL_FIELDS: tuple[Field, ...] = tuple(f for f in DATA_FIELDS if f.kind == "bool")
ENUM_FIELDS: tuple[Field, ...] = tuple(f for f in DATA_FIELDS if f.kind == "enum")
#: The channels with energy counters (each has a stored energy per bucket), in message order.
ENERGY_CHANNELS: tuple[str, ...] = tuple(f.subsystem for f in NUMERIC_FIELDS if f.name == "total_energy")
