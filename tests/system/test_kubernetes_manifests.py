"""The Kubernetes manifests (packaging/kubernetes/): every document validates against the Kubernetes API schemas
(kubernetes-validate, strict, offline; the oldest and newest versions its schemas cover that we support), and what
the documents name fits together and fits the project: selectors, the autoscaler's target, volumes, probes, images,
the commands the StoreSight image runs, the bridge's config, the model repository Triton serves."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from plugin.cli.main import build_parser
from plugin.config.loader import load_config
from plugin.hq.config import load_hq_config

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = REPO_ROOT / "packaging" / "kubernetes"
VERSIONS = ("1.29.0", "1.37.0")
VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
OWN_IMAGE = f"storesight:{VERSION}"
EXTERNAL_IMAGES = {"nvcr.io/nvidia/tritonserver:24.10-py3", "postgres:15-bookworm"}
# Secrets the admin creates (docs/install.md shows the commands): never in the manifests
ADMIN_SECRETS = {"storesight-postgres", "storesight-hq-admin", "storesight-store-001"}
INSTALL_DOC = REPO_ROOT / "docs" / "install.md"


def documents() -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) for every document of every manifest file."""
    out = []
    for path in sorted(HERE.glob("*.yaml")):
        out += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return out


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in documents() if d["kind"] == kind}


def workloads() -> dict[str, dict[str, Any]]:
    """Deployments and StatefulSets by name."""
    return by_kind("Deployment") | by_kind("StatefulSet")


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def _id(item: tuple[str, dict[str, Any]]) -> str:
    return f"{item[0]}:{item[1]['kind']}/{item[1]['metadata']['name']}"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("item", documents(), ids=_id)
def test_each_document_validates_strictly(item: tuple[str, dict[str, Any]], version: str) -> None:
    kubernetes_validate.validate(item[1], version, strict=True)


def test_an_unknown_field_is_refused_by_the_same_validation() -> None:
    deployment = copy.deepcopy(by_kind("Deployment")["triton"])
    deployment["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1
    with pytest.raises(kubernetes_validate.ValidationError, match="gpus"):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


def test_one_namespace_and_every_selector_finds_its_pods() -> None:
    docs = [d for _, d in documents()]
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"storesight"}
    pods = {name: w["spec"]["template"]["metadata"]["labels"] for name, w in workloads().items()}
    for name, w in workloads().items():
        assert w["spec"]["selector"]["matchLabels"].items() <= pods[name].items(), name
    for name, svc in by_kind("Service").items():
        matched = [w for w, labels in pods.items() if svc["spec"]["selector"].items() <= labels.items()]
        assert len(matched) == 1, f"Service {name} selects {matched}"
        ports = {p["name"] for c in containers(workloads()[matched[0]]) for p in c.get("ports", [])}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports, name


def test_triton_asks_for_a_gpu_and_scales_with_an_autoscaler() -> None:
    triton = workloads()["triton"]
    (server,) = triton["spec"]["template"]["spec"]["containers"]
    assert server["image"] in EXTERNAL_IMAGES and "tritonserver" in server["image"]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1
    (hpa,) = by_kind("HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "triton"}
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"] >= 1
    # the resource the autoscaler measures is one the pods request (utilisation is relative to the request)
    for metric in hpa["spec"]["metrics"]:
        assert metric["resource"]["name"] in server["resources"]["requests"]


def test_triton_serves_the_gpu_flavour_its_init_container_builds() -> None:
    triton = workloads()["triton"]
    (init,) = triton["spec"]["template"]["spec"]["initContainers"]
    (server,) = triton["spec"]["template"]["spec"]["containers"]
    assert init["image"] == OWN_IMAGE
    args = build_parser().parse_args(init["args"])
    assert (args.command, args.models_command, args.flavour) == ("models", "fetch", "gpu")
    mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    served = {m["mountPath"]: m["name"] for m in server["volumeMounts"]}
    repository = next(a.split("=", 1)[1] for a in server["args"] if a.startswith("--model-repository="))
    assert args.repository == mounts["models"] == repository and served[repository] == "models"
    gpu = text_format.Parse(
        (REPO_ROOT / "triton_models" / "gpu" / "yolox_nano" / "config.pbtxt").read_text(),
        model_config_pb2.ModelConfig(),
    )
    (trt,) = gpu.optimization.execution_accelerators.gpu_execution_accelerator
    assert served[trt.parameters["trt_engine_cache_path"]] == "trt-cache"


def test_volumes_configmaps_claims_and_secrets_are_accounted_for() -> None:
    configmaps, claims = set(by_kind("ConfigMap")), set(by_kind("PersistentVolumeClaim"))
    secrets: set[str] = set()
    for name, w in workloads().items():
        spec = w["spec"]["template"]["spec"]
        declared = {v["name"]: v for v in spec.get("volumes", [])}
        declared |= {t["metadata"]["name"]: {} for t in w["spec"].get("volumeClaimTemplates", [])}
        for c in containers(w):
            for m in c.get("volumeMounts", []):
                assert m["name"] in declared, f"{name}/{c['name']}: volume {m['name']}"
            for e in c.get("env", []):
                if "secretKeyRef" in e.get("valueFrom", {}):
                    secrets.add(e["valueFrom"]["secretKeyRef"]["name"])
            secrets |= {s["secretRef"]["name"] for s in c.get("envFrom", []) if "secretRef" in s}
        for v in declared.values():
            if "configMap" in v:
                assert v["configMap"]["name"] in configmaps, name
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims, name
    assert secrets == ADMIN_SECRETS
    assert not by_kind("Secret")  # passwords never live in the manifests
    install = INSTALL_DOC.read_text()
    for secret in ADMIN_SECRETS:
        assert f"create secret generic {secret}" in install, f"docs/install.md does not show how to create {secret}"


def test_storesight_containers_run_unprivileged_with_commands_the_cli_takes() -> None:
    for name, w in workloads().items():
        pod = w["spec"]["template"]["spec"]
        for c in containers(w):
            assert c["image"] == OWN_IMAGE or c["image"] in EXTERNAL_IMAGES, f"{name}: {c['image']}"
            context = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
            assert context.get("allowPrivilegeEscalation") is False and context["capabilities"]["drop"] == ["ALL"]
            if c["image"] != OWN_IMAGE:
                continue
            assert context.get("runAsNonRoot") is True and context.get("readOnlyRootFilesystem") is True, name
            if c["args"][0] != "hq":  # head office's command: see the test below
                build_parser().parse_args(c["args"])
            for probe in ("livenessProbe", "readinessProbe"):
                if probe in c:
                    port = c[probe]["httpGet"]["port"]
                    assert port in {p["name"] for p in c["ports"]}, f"{name}: {probe} on {port}"


def test_head_office_parses_its_config_and_would_serve_in_the_cluster(tmp_path: Path) -> None:
    hq_workload = workloads()["storesight-hq"]
    (hq,) = hq_workload["spec"]["template"]["spec"]["containers"]
    args = build_parser().parse_args(hq["args"])
    mount = next(m for m in hq["volumeMounts"] if Path(args.config).parent == Path(m["mountPath"]))
    volume = next(v for v in hq_workload["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    path = tmp_path / "hq.yaml"
    path.write_text(by_kind("ConfigMap")[volume["configMap"]["name"]]["data"][Path(args.config).name])
    config = load_hq_config(path)
    assert config.host == "0.0.0.0" and (config.plain_http or config.tls_cert is not None)  # else it refuses
    assert "storesight-hq" in config.allowed_hosts and config.port == hq["ports"][0]["containerPort"]
    writable = [m["mountPath"] for m in hq["volumeMounts"] if not m.get("readOnly")]  # the root file system is not
    assert any(config.state_dir.is_relative_to(w) for w in writable), (config.state_dir, writable)
    assert "STORESIGHT_ADMIN_PASSWORD" in {e["name"] for e in hq["env"]}


def test_the_bridge_config_is_valid_and_points_at_the_triton_service(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bridge = workloads()["storesight-store-001"]
    (container,) = bridge["spec"]["template"]["spec"]["containers"]
    args = build_parser().parse_args(container["args"])
    config_mount = next(m for m in container["volumeMounts"] if Path(args.config).parent == Path(m["mountPath"]))
    volume = next(v for v in bridge["spec"]["template"]["spec"]["volumes"] if v["name"] == config_mount["name"])
    text = by_kind("ConfigMap")[volume["configMap"]["name"]]["data"][Path(args.config).name]
    monkeypatch.setenv("CAM1_USER", "viewer")
    monkeypatch.setenv("CAM1_PASSWORD", "secret")
    path = tmp_path / "storesight.yaml"
    path.write_text(text)
    config = load_config(path)  # ${VAR} references expanded, as the bridge reads it
    triton_svc = by_kind("Service")["triton"]
    grpc_port = next(p["port"] for p in triton_svc["spec"]["ports"] if p["name"] == "grpc")
    assert config.triton.url == f"grpc://triton:{grpc_port}"
    assert str(config.storage.path) in {m["mountPath"] for m in container["volumeMounts"]}
    assert args.listen.endswith(f":{config.web.port}") and config.web.port == container["ports"][0]["containerPort"]
    assert bridge["spec"]["strategy"]["type"] == "Recreate" and bridge["spec"]["replicas"] == 1  # one SQLite writer


def test_head_office_reaches_its_postgres() -> None:
    (hq,) = workloads()["storesight-hq"]["spec"]["template"]["spec"]["containers"]
    url = next(e["value"] for e in hq["env"] if e["name"] == "STORESIGHT_HQ_DATABASE_URL")
    found = re.fullmatch(r"postgresql://(\w+):\$\(POSTGRES_PASSWORD\)@(\w+):(\d+)/(\w+)", url)
    assert found, url
    user, host, port, db = found.groups()
    pg = workloads()["postgres"]
    (server,) = pg["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert (env["POSTGRES_USER"], env["POSTGRES_DB"]) == (user, db)
    assert host == pg["spec"]["serviceName"] and int(port) in {
        p["port"] for p in by_kind("Service")[host]["spec"]["ports"]
    }
    # the password reaches both from the same secret key
    names = [e["name"] for e in hq["env"]]
    assert names.index("POSTGRES_PASSWORD") < names.index("STORESIGHT_HQ_DATABASE_URL")  # $(VAR) needs it first
