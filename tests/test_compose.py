"""docker-compose.yml, Dockerfile and .dockerignore kept honest without a Docker engine.

The compose file validates against the Compose specification's JSON schema (offline, bundled with
check-jsonschema); every EnerLink service runs an existing ``enerlink`` subcommand whose own parser
accepts the arguments; every variable it sets is one the settings read; health checks, start-up
ordering, named volumes and the absence of literal secrets are checked too.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from enerlink.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PACKAGES = ("enerlink", "schemas", "edge", "ingest", "aggregator", "archiver", "api", "hass")
_GETTER = re.compile(r"\benv\.(?:str|int|float|bool|path|optional|raw|list|seconds)\(\s*\"([A-Z0-9_]+)\"")
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|REQUIREPASS", re.IGNORECASE)


@cache
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def services() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose()["services"]
    return result


def enerlink_services() -> dict[str, dict[str, Any]]:
    """Services that run the project's image (built from the Dockerfile)."""
    return {name: svc for name, svc in services().items() if "build" in svc}


def interpolate(value: str) -> str:
    """Compose interpolation with defaults (``${X:-d}`` -> d) and placeholders for required values."""
    return _INTERPOLATION.sub(lambda m: m.group(3) if m.group(2) in (":-", "-") else "value", value)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


@cache
def settings_variables() -> frozenset[str]:
    """Every ENERLINK_* name an ``Env`` getter reads anywhere in the packages."""
    names: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            names.update(_GETTER.findall(path.read_text(encoding="utf-8")))
    return frozenset("ENERLINK_" + name for name in names)


def test_compose_file_matches_the_compose_specification() -> None:
    checker = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_whole_stack_is_there() -> None:
    images = {name: svc.get("image", "") for name, svc in services().items()}
    assert images["mosquitto"].startswith("eclipse-mosquitto:2")
    assert images["redis"].startswith("redis:7")
    assert images["postgres"].startswith("postgres:16")
    assert images["minio"].startswith("minio/minio")
    assert images["minio-init"].startswith("minio/mc")
    commands = {name: svc["command"][0] for name, svc in enerlink_services().items()}
    assert commands == {
        "ingest": "ingest",
        "aggregator": "aggregate",
        "archiver": "archive",
        "api": "api",
        "simulator": "edge",
        "hass": "hass",
    }
    # the simulated fleet is a profile: on with COMPOSE_PROFILES=demo, off for production
    assert services()["simulator"]["profiles"] == ["demo"]
    # Home Assistant discovery too: COMPOSE_PROFILES=homeassistant
    assert services()["hass"]["profiles"] == ["homeassistant"]
    optional = ("simulator", "hass")
    assert all("profiles" not in svc for name, svc in services().items() if name not in optional)


@pytest.mark.parametrize("name", sorted(enerlink_services()))
def test_service_command_is_an_enerlink_subcommand_with_valid_arguments(name: str) -> None:
    argv = [interpolate(str(arg)) for arg in services()[name]["command"]]
    assert argv[0] in COMMANDS, f"{name}: enerlink has no subcommand {argv[0]!r}"
    parser = build_parser(argv)  # imports the subcommand's own cli module and its arguments
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse rejects unknown or malformed arguments
        raise AssertionError(f"{name}: enerlink {' '.join(argv)} is rejected by its parser") from exc
    assert isinstance(args, argparse.Namespace)
    assert callable(args._main)


def test_settings_variable_scan_finds_the_common_settings() -> None:
    assert {"ENERLINK_MQTT_URL", "ENERLINK_REDIS_URL", "ENERLINK_DATABASE_URL"} <= settings_variables()


@pytest.mark.parametrize("name", sorted(enerlink_services()))
def test_every_variable_a_service_sets_is_read_by_the_settings(name: str) -> None:
    unknown = sorted(set(environment(services()[name])) - settings_variables())
    assert unknown == [], f"{name} sets variables no settings read: {unknown}"


def test_every_long_running_service_has_a_health_check_and_waits_for_healthy_dependencies() -> None:
    all_services = services()
    one_shots = {name for name, svc in all_services.items() if svc.get("restart") == "no"}
    assert one_shots == {"mosquitto-init", "minio-init"}
    for name, svc in all_services.items():
        if name not in one_shots:
            assert "test" in svc.get("healthcheck", {}), f"{name} has no health check"
        for dependency, condition in svc.get("depends_on", {}).items():
            assert dependency in all_services, f"{name} depends on unknown {dependency}"
            expected = "service_completed_successfully" if dependency in one_shots else "service_healthy"
            assert condition == {"condition": expected}, f"{name} -> {dependency}"
    needs = {
        "mosquitto": {"mosquitto-init"},
        "minio-init": {"minio"},
        "ingest": {"mosquitto", "redis"},
        "aggregator": {"redis", "postgres"},
        "archiver": {"postgres", "minio-init"},
        "api": {"mosquitto", "redis", "postgres"},
        "simulator": {"mosquitto"},
        "hass": {"mosquitto", "redis"},
    }
    for name, required in needs.items():
        assert required <= set(all_services[name].get("depends_on", {})), name


def test_data_lives_in_named_volumes() -> None:
    declared = set(compose()["volumes"])
    data_paths = {
        "mosquitto": "/mosquitto/data",
        "redis": "/data",
        "postgres": "/var/lib/postgresql/data",
        "minio": "/data",
    }
    for name, path in data_paths.items():
        mounts = dict(reversed(str(volume).split(":")[:2]) for volume in services()[name]["volumes"])
        assert mounts.get(path) in declared, f"{name}: {path} is not on a named volume"


def test_broker_paths_of_the_production_config_are_mounted() -> None:
    """Every /mosquitto/... folder mosquitto.conf uses exists in the mosquitto container."""
    mounts = [str(volume).split(":")[1] for volume in services()["mosquitto"]["volumes"]]
    conf = (ROOT / "mosquitto" / "mosquitto.conf").read_text(encoding="utf-8")
    paths = re.findall(r"^\w+\s+(/mosquitto/\S+)", conf, flags=re.MULTILINE)
    assert len(paths) >= 4
    for path in paths:
        assert any(path.rstrip("/").startswith(mount) for mount in mounts), path
    assert "allow_anonymous false" in conf


def test_no_secret_is_written_in_the_file() -> None:
    for name, svc in services().items():
        values = {**environment(svc)}
        command = svc.get("command", [])
        if isinstance(command, list):
            values.update({f"command[{i}]": str(arg) for i, arg in enumerate(command)})
        for key, value in values.items():
            if _SECRET_NAME.search(key) and value:
                assert value.startswith("${"), f"{name}: {key} is a literal"
            for credentials in re.findall(r"://([^@/\s]+)@", value):
                assert "${" in credentials.split(":", 1)[-1], f"{name}: {key} has a literal password"
        prior = ""
        for arg in command if isinstance(command, list) else []:
            if prior == "--requirepass":
                assert str(arg).startswith("${"), f"{name}: literal redis password"
            prior = str(arg)


def test_env_example_lists_every_required_variable() -> None:
    example = ROOT / ".env.example"
    if not example.exists():
        pytest.skip(".env.example is not in the repository yet (the integrator adds the compose block)")
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example.read_text(encoding="utf-8"), re.MULTILINE))
    required = {m.group(1) for m in _INTERPOLATION.finditer(COMPOSE.read_text()) if m.group(2) == ":?"}
    assert required - listed == set()
    assert "COMPOSE_PROFILES" in listed


def test_dockerfile_is_multi_stage_non_root_and_copies_every_package() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert len(re.findall(r"^FROM\s", text, flags=re.MULTILINE)) >= 2
    assert "-slim" in text
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["enerlink"\]', text, flags=re.MULTILINE)
    copied = set()
    for sources in re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", text, flags=re.MULTILINE):
        for source in sources.split():
            if not any(char in source for char in "*?["):  # a glob may match nothing (optional file)
                assert (ROOT / source).exists(), f"COPY {source}: no such file"
            copied.add(source)
    assert "pyproject.toml" in copied
    assert set(PACKAGES) <= copied
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".env", "tests"} <= ignored
    assert not ignored & set(PACKAGES)
