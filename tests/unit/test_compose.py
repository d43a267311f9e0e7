"""Static checks of container/docker-compose.yml (no container engine runs here).

The file is parsed with PyYAML (merge keys resolved) and checked against the contract in
docs/local.md: the same image for both services, the model server unexposed on an
internal network, host ports on loopback only, the shared model cache mounted at the same
path, health checks on /ping, and an emulator command the real CLI accepts.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from scorer.cache import settings as cache_settings
from scorer.cli import cli
from scorer.local import settings as local_settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "container" / "docker-compose.yml"
_DEFAULT = re.compile(r"^\$\{(?P<name>[A-Z0-9_]+):-(?P<default>[^}]*)\}$")
_INTERPOLATED = re.compile(r"\$\{(?P<name>[A-Z0-9_]+):-(?P<default>[^}]*)\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def _interpolated_default(value: str) -> str:
    match = _DEFAULT.match(value)
    assert match, f"expected ${{NAME:-default}}, got {value!r}"
    return match["default"]


def _published(ports: list[Any]) -> list[tuple[str, str, str]]:
    """(host ip, host port, container port) of each published port (short or long syntax)."""
    published = []
    for port in ports:
        if isinstance(port, dict):
            published.append((port.get("host_ip", ""), str(port["published"]), str(port["target"])))
            continue
        parts = str(port).split(":")
        host_ip = parts[0] if len(parts) == 3 else ""
        published.append((host_ip, parts[-2] if len(parts) > 1 else "", parts[-1]))
    return published


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """target -> (source, read_only) for short-syntax volumes."""
    mounts = {}
    for volume in service.get("volumes", []):
        volume = _INTERPOLATED.sub(lambda m: m["default"], volume)  # ${NAME:-default}
        source, target, *mode = volume.split(":")
        mounts[target] = (source, "ro" in mode)
    return mounts


def _local_params(command: list[str]) -> dict[str, Any]:
    assert command[:2] == ["scorer", "local"]
    local = cli.commands["local"]
    return local.make_context("local", list(command[2:])).params


def test_services(services: dict[str, Any]) -> None:
    assert set(services) == {"model-server", "emulator", "s3"}


def test_both_scorer_services_use_the_same_image_built_from_the_repo(
    services: dict[str, Any],
) -> None:
    for name in ("model-server", "emulator"):
        service = services[name]
        assert service["image"] == "scorer:latest"
        context = (COMPOSE.parent / service["build"]["context"]).resolve()
        assert context == REPO and service["build"]["dockerfile"] == "Dockerfile"


def test_model_server_runs_serve_multi_model_unexposed(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    server = services["model-server"]
    assert server["command"] == ["serve"]
    assert server["environment"]["SAGEMAKER_MULTI_MODEL"] == "true"
    assert "ports" not in server and "expose" not in server
    assert list(server["networks"]) == ["internal"]
    # one plain bridge for all: podman publishes a port on every network a container joins,
    # in no fixed order, and the host cannot reach an internal: true network's addresses
    assert "internal" not in compose["networks"]["internal"]
    assert list(compose["networks"]) == ["internal"]


def test_the_emulator_finds_the_model_server_without_dns(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    """podman's CNI backend has no DNS on internal networks: the model server has a fixed
    address in the internal subnet, and the emulator's hosts file names it."""
    subnet = _INTERPOLATED.sub(
        lambda m: m["default"], compose["networks"]["internal"]["ipam"]["config"][0]["subnet"]
    )
    addresses = {
        name: _INTERPOLATED.sub(
            lambda m: m["default"], services[name]["networks"]["internal"]["ipv4_address"]
        )
        for name in ("model-server", "s3")
    }
    for address in addresses.values():
        assert ipaddress.ip_address(address) in ipaddress.ip_network(subnet)
    assert len(set(addresses.values())) == 2
    hosts = dict(
        _INTERPOLATED.sub(lambda m: m["default"], entry).split(":", 1)
        for entry in services["emulator"]["extra_hosts"]
    )
    assert hosts == addresses


def test_every_published_port_is_on_loopback(services: dict[str, Any]) -> None:
    published = [p for s in services.values() for p in _published(s.get("ports", []))]
    assert published
    for host_ip, _host, _target in published:
        assert host_ip == "127.0.0.1"
    assert ("127.0.0.1", "8080", "8080") in _published(services["emulator"]["ports"])


def test_emulator_command_is_accepted_by_the_cli_and_points_at_the_model_server(
    services: dict[str, Any],
) -> None:
    emulator = services["emulator"]
    params = _local_params(emulator["command"])
    assert params["model_server_url"] == "http://model-server:8080"
    assert params["bind"] == "0.0.0.0" and params["port"] == 8080
    assert emulator["depends_on"]["model-server"]["condition"] == "service_healthy"
    assert emulator["networks"] == ["internal"]


def test_the_model_cache_is_shared_at_the_same_path(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    emulator, server = services["emulator"], services["model-server"]
    cache_dir = str(_local_params(emulator["command"])["cache_dir"])
    assert _mounts(emulator)[cache_dir][0] == _mounts(server)[cache_dir][0] == "model-cache"
    assert "model-cache" in compose["volumes"]
    assert server["environment"]["SCORER_MODELS_ROOT"] == cache_dir


def test_models_are_bind_mounted_read_only_and_are_the_default_prefix(
    services: dict[str, Any],
) -> None:
    emulator = services["emulator"]
    prefix = _interpolated_default(emulator["environment"][cache_settings.MODEL_PREFIX])
    source, read_only = _mounts(emulator)[prefix]
    assert (COMPOSE.parent / source).resolve() == REPO / "models" and read_only


def test_environment_names_are_the_ones_scorer_reads(services: dict[str, Any]) -> None:
    known = {
        cache_settings.MODEL_PREFIX,
        cache_settings.CACHE_MAX_MODELS,
        cache_settings.CACHE_MAX_MEMORY,
        local_settings.ENDPOINT_NAME,
        local_settings.WATCH,
    }
    scorer_names = {n for n in services["emulator"]["environment"] if n.startswith("SCORER_")}
    assert scorer_names <= known, scorer_names - known
    for value in services["emulator"]["environment"].values():
        _interpolated_default(value)  # every value can be overridden from the shell


def test_health_checks_ping_the_service(services: dict[str, Any]) -> None:
    for name in ("model-server", "emulator"):
        check = services[name]["healthcheck"]
        assert check["test"][0] == "CMD"
        assert "http://127.0.0.1:8080/ping" in " ".join(check["test"])
        assert check["retries"] >= 3


def test_s3_is_optional_and_pinned(services: dict[str, Any]) -> None:
    s3 = services["s3"]
    assert s3["profiles"] == ["s3"]
    image, _, tag = _interpolated_default(s3["image"]).partition(":")
    assert image == "motoserver/moto" and re.fullmatch(r"\d+\.\d+\.\d+", tag)
    # the same moto as the tests' (requirements/constraints.txt)
    constraints = (REPO / "requirements" / "constraints.txt").read_text().splitlines()
    assert f"moto=={tag}" in constraints
