"""JSON Schema files for both topics, generated from the models.

``python -m enerlink.schemas.jsonschema`` rewrites ``schemas/json/*.schema.json``; a test fails when the
committed files drift from the models. Firmware and other consumers read these files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from enerlink.schemas.commands import Command, CommandAck
from enerlink.schemas.delivery import Confirmation, ResendCommand, ResendResult
from enerlink.schemas.telemetry import DataMessage, StatusMessage

JSON_DIR = Path(__file__).with_name("json")
SCHEMA_FILES: dict[str, type[BaseModel]] = {
    "meter-data.schema.json": DataMessage,
    "meter-status.schema.json": StatusMessage,
    "meter-command.schema.json": Command,
    "meter-command-ack.schema.json": CommandAck,
    "meter-confirm.schema.json": Confirmation,
    "meter-resend-command.schema.json": ResendCommand,
    "meter-resend-result.schema.json": ResendResult,
}


def render(model: type[BaseModel]) -> str:
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **model.model_json_schema(by_alias=True, mode="validation"),
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_all(directory: Path = JSON_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in SCHEMA_FILES.items():
        path = directory / name
        path.write_text(render(model), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_all():
        print(path)
