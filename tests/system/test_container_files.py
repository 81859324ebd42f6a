"""The container image definition and the compose files, checked statically: no container engine runs here, so the
image is never built in these tests (docs/install.md says so). The Dockerfile goes through Docker's own parser
(the `dockerfile` package wraps moby's), the compose files through the compose-spec parser; then what they name is
checked against the project: images, commands, ports, volumes and the files they mount."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import dockerfile
import pytest
import yaml
from compose_spec import PyCompose
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from plugin.cli.main import build_parser
from plugin.config.loader import load_config
from plugin.hq.config import load_hq_config

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = REPO_ROOT / "packaging" / "container"
DOCKERFILE = HERE / "Dockerfile"
COMPOSE, COMPOSE_GPU = HERE / "compose.yaml", HERE / "compose.gpu.yaml"
VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
# The images from elsewhere the files may name, pinned: NVIDIA's Triton release whose server matches the embedded one
# (Triton 2.51 = NGC 24.10), the PostgreSQL major the tests run, the Python the project runs.
EXTERNAL_IMAGES = {"nvcr.io/nvidia/tritonserver:24.10-py3", "postgres:15-bookworm", "python:3.11-slim-bookworm"}
OWN_IMAGE = f"storesight:{VERSION}"
TRITON_PORTS = {"8000", "8001", "8002"}  # HTTP, gRPC, metrics: tritonserver's defaults
IMAGE_VOLUMES = {"/etc/storesight", "/var/lib/storesight"}


def instructions() -> list[dockerfile.Command]:
    """The Dockerfile as Docker's parser reads it."""
    return list(dockerfile.parse_file(str(DOCKERFILE)))


def final_stage() -> list[dockerfile.Command]:
    """The instructions of the last stage (the image that ships)."""
    cmds = instructions()
    last_from = max(i for i, c in enumerate(cmds) if c.cmd == "FROM")
    return cmds[last_from:]


def merged(*files: Path) -> dict[str, Any]:
    """compose's own merge of an override onto a base file, for the keys these files use: mappings merge, lists and
    scalars replace (docs.docker.com/compose/how-tos/multiple-compose-files/merge)."""

    def merge(base: Any, over: Any) -> Any:
        if isinstance(base, dict) and isinstance(over, dict):
            return {k: merge(base[k], v) if k in base else v for k, v in over.items()} | {
                k: v for k, v in base.items() if k not in over
            }
        return over

    out: dict[str, Any] = {}
    for f in files:
        out = merge(out, yaml.safe_load(f.read_text()))
    return out


def test_the_dockerfile_parses_with_known_instructions_only() -> None:
    cmds = instructions()
    unknown = [c.original for c in cmds if c.cmd.lower() not in dockerfile.all_cmds()]
    assert cmds and not unknown, unknown


def test_the_image_runs_as_an_unprivileged_user_with_volumes_and_a_healthcheck() -> None:
    final = final_stage()
    users = [c.value[0] for c in final if c.cmd == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    entry = [i for i, c in enumerate(final) if c.cmd in ("ENTRYPOINT", "CMD")]
    assert max(i for i, c in enumerate(final) if c.cmd == "USER") < min(entry)  # the process starts as that user
    volumes = {v for c in final if c.cmd == "VOLUME" for v in c.value}
    assert volumes == IMAGE_VOLUMES
    (health,) = [c for c in final if c.cmd == "HEALTHCHECK"]
    (cmd,) = [c for c in final if c.cmd == "CMD"]
    listen = cmd.value[cmd.value.index("--listen") + 1]
    port = listen.rpartition(":")[2]
    assert health.value[0] == "CMD" and f"http://127.0.0.1:{port}/healthz" in " ".join(health.value)
    assert [c.value for c in final if c.cmd == "EXPOSE"] == [(port,)]
    (entrypoint,) = [c for c in final if c.cmd == "ENTRYPOINT"]
    assert entrypoint.value == ("storesight",)
    build_parser().parse_args(list(cmd.value))  # the default command is one the CLI takes
    env = " ".join(" ".join(c.value) for c in final if c.cmd == "ENV")
    assert "STORESIGHT_DATA_DIR /var/lib/storesight" in env  # models and data in the data volume


def test_the_dockerfile_names_only_pinned_images_and_files_that_exist() -> None:
    cmds = instructions()
    args = dict(c.value[0].split("=", 1) for c in cmds if c.cmd == "ARG" and "=" in c.value[0])
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], c.value[0]) for c in cmds if c.cmd == "FROM"]
    assert set(bases) <= EXTERNAL_IMAGES, bases
    for copy in cmds:
        if copy.cmd == "COPY" and not any(f.startswith("--from") for f in copy.flags):
            # the wheel build_wheel.sh writes to dist/ by default; everything else must be in the checkout
            for src in copy.value[:-1]:
                assert src == "dist/" or (REPO_ROOT / src).exists(), src
    build_wheel = (REPO_ROOT / "packaging" / "scripts" / "build_wheel.sh").read_text()
    assert 'out="${1:-dist}"' in build_wheel
    run = " ".join(" ".join(c.value) for c in cmds if c.cmd == "RUN")
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert args["EXTRAS"] in extras and "storesight-*-py3-none-any.whl" in run


def test_the_compose_files_parse() -> None:
    base = PyCompose.from_yaml(COMPOSE.read_text())
    assert set(base.service_names()) == {"models", "triton", "bridge", "hq", "postgres"}
    assert set(PyCompose.from_yaml(COMPOSE_GPU.read_text()).service_names()) == {"models", "triton"}
    # and the merged file (what `docker compose -f compose.yaml -f compose.gpu.yaml` runs) is still valid
    PyCompose.from_yaml(yaml.safe_dump(merged(COMPOSE, COMPOSE_GPU)))


def test_a_broken_compose_file_is_refused_by_the_same_parser() -> None:
    broken = COMPOSE.read_text().replace("condition: service_healthy", "condition: service_happy")
    with pytest.raises(ValueError, match="service_happy"):
        PyCompose.from_yaml(broken)


@pytest.mark.parametrize("files", [(COMPOSE,), (COMPOSE, COMPOSE_GPU)], ids=["cpu", "gpu"])
def test_compose_names_only_images_commands_ports_and_volumes_that_exist(
    files: tuple[Path, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = merged(*files)
    services: dict[str, Any] = doc["services"]
    declared = set(doc.get("volumes", {}))
    used: set[str] = set()
    for name, svc in services.items():
        image = svc["image"]
        if image == OWN_IMAGE:
            assert svc.get("user") in (None, "storesight", "10001"), f"{name} runs as {svc['user']}"
            build = svc["build"]
            context = (COMPOSE.parent / build["context"]).resolve()
            assert context == REPO_ROOT and (context / build["dockerfile"]).resolve() == DOCKERFILE, name
        else:
            assert image in EXTERNAL_IMAGES, f"{name}: {image}"
        for volume in svc.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (COMPOSE.parent / source).is_file(), f"{name}: {source}"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
            if image == OWN_IMAGE and name != "models":
                assert any(target == v or target.startswith(v + "/") for v in IMAGE_VOLUMES), f"{name}: {target}"
    assert used == declared, f"declared but unused: {declared - used}"
    # ports each service listens on
    monkeypatch.setenv("CAM1_USER", "viewer")
    monkeypatch.setenv("CAM1_PASSWORD", "secret")
    bridge_cfg = load_config(HERE / "storesight.yaml")
    hq_cfg = yaml.safe_load((HERE / "hq.yaml").read_text())
    listens = {
        "bridge": {str(bridge_cfg.web.port)},
        "hq": {str(hq_cfg["port"])},
        "triton": TRITON_PORTS,
        "postgres": {"5432"},
    }
    for name, svc in services.items():
        published = {p.split(":")[-1] for p in svc.get("ports", [])} | set(svc.get("expose", []))
        assert published <= listens.get(name, set()), f"{name}: {published} (listens on {listens.get(name)})"
    assert services["bridge"]["ports"] == [f"{bridge_cfg.web.port}:{bridge_cfg.web.port}"]
    # the bridge reaches Triton by service name on its gRPC port
    assert bridge_cfg.triton.url == "grpc://triton:8001"
    # Triton serves the volume the models service fills, and keeps TensorRT engines where the gpu config caches them
    triton = services["triton"]
    assert "--model-repository=/models" in triton["command"]
    fetch = services["models"]["command"]
    assert fetch[fetch.index("--repository") + 1] == "/models"
    gpu = text_format.Parse(
        (REPO_ROOT / "triton_models" / "gpu" / "yolox_nano" / "config.pbtxt").read_text(),
        model_config_pb2.ModelConfig(),
    )
    (trt,) = gpu.optimization.execution_accelerators.gpu_execution_accelerator
    assert f"trt-cache:{trt.parameters['trt_engine_cache_path']}" in triton["volumes"]


@pytest.mark.parametrize("service", ["models", "bridge"])
def test_the_storesight_commands_parse(service: str) -> None:
    command = merged(COMPOSE)["services"][service]["command"]
    build_parser().parse_args(command)


def test_head_office_parses_its_config_and_would_serve_on_the_compose_network() -> None:
    service = merged(COMPOSE)["services"]["hq"]
    args = build_parser().parse_args(service["command"])
    source = next(v.split(":")[0] for v in service["volumes"] if v.split(":")[1] == args.config)
    config = load_hq_config(COMPOSE.parent / source)  # the file compose mounts, read as head office reads it
    assert config.host == "0.0.0.0" and (config.plain_http or config.tls_cert is not None)  # else it refuses
    assert "hq" in config.allowed_hosts  # the stores' hq sinks reach it as http://hq:8090
    assert service["ports"] == [f"{config.port}:{config.port}"]
    writable = [v.split(":")[1] for v in service["volumes"] if not v.endswith(":ro")]
    assert any(config.state_dir.is_relative_to(w) for w in writable), (config.state_dir, writable)


def test_the_gpu_override_reserves_gpus_and_switches_the_flavour() -> None:
    doc = merged(COMPOSE, COMPOSE_GPU)
    devices = doc["services"]["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    fetch = doc["services"]["models"]["command"]
    assert fetch[fetch.index("--flavour") + 1] == "gpu"
    cpu = merged(COMPOSE)
    assert "deploy" not in cpu["services"]["triton"]  # without the override nothing asks for a GPU
    assert shlex.join(cpu["services"]["models"]["command"]).count("--flavour onnx") == 1
