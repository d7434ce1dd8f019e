"""deploy/ renders, validates against the pinned Kubernetes and CRD schemas, and holds together.

Every kustomization is built with the pinned kustomize and every object it yields is checked by kubeconform
against strict schemas (conftest.py), offline; broken objects are shown to fail the same check. Then the
overlays' meaning: gRPC health probes on the gRPC port, the restricted security context, a termination grace
period that covers preStop plus the server's own --grace_period, GPU scheduling, flags that the server defines
and that agree with the pod, Services, PDB, HPA and its metrics down to the gauges server/metrics.cc registers,
and the model initContainer's script run against a stand-in export tool.
"""
from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pytest
import yaml

if TYPE_CHECKING:
    from .conftest import Validator

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
TARGETS = ["base", "overlays/cpu", "overlays/gpu", "overlays/gpu-gateway", "prometheus-adapter"]
# overlay -> the --device its server runs on
OVERLAYS = {"overlays/cpu": "cpu", "overlays/gpu": "cuda", "overlays/gpu-gateway": "cuda"}
PRESTOP_FLUSH_S = 1  # the server closes the port at most 1 s after its grace period (server/main.cc)

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def rendered(kustomize_build: Callable[[Path], list[Obj]]) -> dict[str, list[Obj]]:
    return {target: kustomize_build(DEPLOY / target) for target in TARGETS}


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def pod_spec(objects: list[Obj]) -> Obj:
    return one(objects, "Deployment", "florence2-server")["spec"]["template"]["spec"]


def server(objects: list[Obj]) -> Obj:
    [container] = [c for c in pod_spec(objects)["containers"] if c["name"] == "server"]
    return container


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def server_flags(objects: list[Obj]) -> dict[str, str]:
    """The flag file the server container reads (--flagfile), followed through its ConfigMap volume."""
    container = server(objects)
    [flagfile] = [a.split("=", 1)[1] for a in container["args"] if a.startswith("--flagfile=")]
    mounts = [m for m in container["volumeMounts"] if flagfile.startswith(m["mountPath"].rstrip("/") + "/")]
    assert len(mounts) == 1, f"{flagfile} is not on exactly one volume mount"
    key = flagfile[len(mounts[0]["mountPath"].rstrip("/")) + 1:]
    [volume] = [v for v in pod_spec(objects)["volumes"] if v["name"] == mounts[0]["name"]]
    config_map = one(objects, "ConfigMap", volume["configMap"]["name"])
    assert key in config_map["data"], f"ConfigMap {config_map['metadata']['name']} has no {key}"
    flags = {}
    for line in config_map["data"][key].splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            assert line.startswith("--") and "=" in line, f"flag file line {line!r} is not --flag=value"
            name, value = line[2:].split("=", 1)
            flags[name] = value
    return flags


def seconds(duration: str) -> float:
    """An absl duration such as 90s, 1m30s, 500ms."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not an absl duration: {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def defined_server_flags() -> set[str]:
    return set(re.findall(r"ABSL_FLAG\(\s*[\w:<>]+\s*,\s*(\w+)\s*,", (REPO / "server" / "main.cc").read_text()))


def registered_gauges() -> set[str]:
    return set(re.findall(r'BuildGauge\(\)\s*\.Name\("(\w+)"\)', (REPO / "server" / "metrics.cc").read_text()))


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


# --- rendering and schemas -------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_renders_and_every_object_is_schema_valid(target: str, rendered: dict[str, list[Obj]],
                                                  validator: "Validator", tmp_path: Path) -> None:
    objects = rendered[target]
    assert objects, f"kustomize build deploy/{target} yielded nothing"
    results = validator.validate(objects, tmp_path)
    bad = [f"{r['kind']}/{r['name']}: {r['status']} {r.get('msg', '')}" for r in results
           if r["status"] != "statusValid"]
    assert not bad, "\n".join(bad) + f"\nschemas from:\n{validator.store.provenance}"


def test_each_target_has_its_objects(rendered: dict[str, list[Obj]]) -> None:
    def kinds(target: str) -> list[str]:
        return sorted(o["kind"] for o in rendered[target])

    core = ["ConfigMap", "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Namespace", "PersistentVolumeClaim",
            "PodDisruptionBudget", "Service", "Service"]
    assert kinds("base") == core
    assert kinds("overlays/cpu") == sorted(core + ["ServiceMonitor"])
    assert kinds("overlays/gpu") == sorted(core + ["ServiceMonitor"])
    assert kinds("overlays/gpu-gateway") == sorted(core + ["ServiceMonitor", "GRPCRoute"])
    assert kinds("prometheus-adapter") == ["ConfigMap"]
    for target in TARGETS[:-1]:
        assert {o["metadata"].get("namespace") for o in rendered[target] if o["kind"] != "Namespace"} == \
            {"florence-serve"}


def _rename(obj: Obj, path: str, new: str) -> None:
    *parents, last = path.split(".")
    node = obj
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    node[new] = node.pop(last)


def _set(obj: Obj, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = obj
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    node[int(last) if last.isdigit() else last] = value


C0 = "spec.template.spec.containers.0"
BROKEN: dict[str, tuple[str, Callable[[Obj], None]]] = {
    "misspelled container field": ("Deployment", lambda o: _rename(o, f"{C0}.readinessProbe", "readinesProbe")),
    "misspelled pod field": ("Deployment", lambda o: _rename(o, "spec.template.spec.tolerations", "toleration")),
    "string for an integer": ("Deployment", lambda o: _set(o, f"{C0}.lifecycle.preStop.sleep.seconds", "5")),
    "container without its name": ("Deployment", lambda o: o["spec"]["template"]["spec"]["containers"][0].pop("name")),
    "probe port as a list": ("Deployment", lambda o: _set(o, f"{C0}.startupProbe.grpc.port", [50051])),
    "service port by name": ("Service", lambda o: _set(o, "spec.ports.0.port", "grpc")),
    "unknown HPA metric type": ("HorizontalPodAutoscaler", lambda o: _set(o, "spec.metrics.0.type", 7)),
    "misspelled PDB field": ("PodDisruptionBudget", lambda o: _rename(o, "spec.maxUnavailable", "maxUnavailabe")),
    "misspelled ServiceMonitor field": ("ServiceMonitor", lambda o: _rename(o, "spec.endpoints.0.interval",
                                                                             "intervall")),
    "misspelled GRPCRoute field": ("GRPCRoute", lambda o: _rename(o, "spec.rules.0.backendRefs", "backendRef")),
    "GRPCRoute match type outside its enum": ("GRPCRoute",
                                              lambda o: _set(o, "spec.rules.0.matches.0.method.type", "Prefix")),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_objects_fail_validation(case: str, rendered: dict[str, list[Obj]], validator: "Validator",
                                        tmp_path: Path) -> None:
    """The schemas are strict enough to matter: each mutation of a valid rendered object is rejected."""
    kind, breaks = BROKEN[case]
    obj = copy.deepcopy([o for o in rendered["overlays/gpu-gateway"] if o["kind"] == kind][0])
    breaks(obj)
    [result] = validator.validate([obj], tmp_path)
    assert result["status"] == "statusInvalid", f"{case}: kubeconform said {result}"


# --- the overlays' meaning -------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_are_grpc_health_on_the_grpc_port(overlay: str, rendered: dict[str, list[Obj]]) -> None:
    container = server(rendered[overlay])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 50051, "metrics": 9090}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        spec = container[probe]
        assert set(spec) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}, probe
        assert spec["grpc"]["port"] == ports["grpc"], probe
        assert spec["grpc"].get("service", "") == "", f"{probe}: the server reports health for service ''"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "model load + warm-up need minutes"
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 60


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_security_context_is_restricted(overlay: str, rendered: dict[str, list[Obj]]) -> None:
    spec = pod_spec(rendered[overlay])
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == pod["runAsGroup"] == pod["fsGroup"] == 10001
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    containers = spec["containers"] + spec["initContainers"]
    assert len(containers) == 2
    for c in containers:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert not sc.get("privileged"), c["name"]
        scratch = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert scratch, f"{c['name']}: a read-only root needs a writable /tmp"
        [volume] = [v for v in spec["volumes"] if v["name"] == scratch[0]["name"]]
        assert "emptyDir" in volume
    namespace = one(rendered[overlay], "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_covers_prestop_and_drain(overlay: str, rendered: dict[str, list[Obj]]) -> None:
    spec = pod_spec(rendered[overlay])
    pre_stop = server(rendered[overlay])["lifecycle"]["preStop"]
    assert set(pre_stop) == {"sleep"}, "preStop uses the native sleep action (the image has no shell guarantees)"
    drain = seconds(server_flags(rendered[overlay])["grace_period"])
    needed = pre_stop["sleep"]["seconds"] + drain + PRESTOP_FLUSH_S
    assert spec["terminationGracePeriodSeconds"] > needed, \
        f"terminationGracePeriodSeconds {spec['terminationGracePeriodSeconds']} <= preStop + grace_period + flush"
    assert 3 <= pre_stop["sleep"]["seconds"] <= 15
    # An <OCR_WITH_REGION> stream of 1024 tokens runs tens of seconds on CPU.
    assert drain >= (60 if OVERLAYS[overlay] == "cpu" else 20)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_flags_are_the_servers_and_agree_with_the_pod(overlay: str, rendered: dict[str, list[Obj]]) -> None:
    objects = rendered[overlay]
    flags = server_flags(objects)
    unknown = set(flags) - defined_server_flags()
    assert not unknown, f"not flags of server/main.cc: {sorted(unknown)}"
    container = server(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port_of(flags["address"]) == ports["grpc"]
    assert port_of(flags["metrics_address"]) == ports["metrics"]
    assert flags["device"] == OVERLAYS[overlay]
    models = [m for m in container["volumeMounts"] if m["name"] == "models"]
    assert len(models) == 1 and models[0]["readOnly"] is True
    assert flags["model"].startswith(models[0]["mountPath"].rstrip("/") + "/")
    if OVERLAYS[overlay] == "cpu":
        assert int(flags["threads"]) == int(container["resources"]["limits"]["cpu"]), "one Torch thread per core"
    kv = int(flags["kv_cache_bytes"])
    memory_gi = int(container["resources"]["limits"]["memory"].removesuffix("Gi"))
    if OVERLAYS[overlay] == "cpu":  # the KV pool lives in the container's memory next to ~3 GiB of model
        assert kv + (3 << 30) < memory_gi << 30


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_device_resources_and_scheduling(overlay: str, rendered: dict[str, list[Obj]]) -> None:
    spec = pod_spec(rendered[overlay])
    container = server(rendered[overlay])
    resources = container["resources"]
    images = {c["image"] for c in spec["containers"] + spec["initContainers"]}
    if OVERLAYS[overlay] == "cuda":
        assert resources["limits"]["nvidia.com/gpu"] == 1
        assert any(t["key"] == "nvidia.com/gpu" and t["operator"] == "Exists" and t["effect"] == "NoSchedule"
                   for t in spec["tolerations"])
        assert spec["nodeSelector"]
        assert images == {"florence-serve:latest-cuda"}
    else:
        assert "nvidia.com/gpu" not in resources["limits"] and "tolerations" not in spec
        assert resources["requests"] == resources["limits"], "Guaranteed QoS: requests = limits"
        assert images == {"florence-serve:latest"}
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_select_the_pods_on_named_ports(overlay: str, rendered: dict[str, list[Obj]]) -> None:
    objects = rendered[overlay]
    labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in server(objects)["ports"]}
    headless = one(objects, "Service", "florence2-server-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert [(p["name"], p["port"]) for p in headless["spec"]["ports"]] == [("grpc", 50051)]
    cluster_ip = one(objects, "Service", "florence2-server")
    assert cluster_ip["spec"].get("clusterIP") != "None"
    assert {p["name"]: p["port"] for p in cluster_ip["spec"]["ports"]} == {"grpc": 50051, "metrics": 9090}
    for service in (headless, cluster_ip):
        assert selects(service["spec"]["selector"], labels), service["metadata"]["name"]
        for p in service["spec"]["ports"]:
            assert p["targetPort"] in port_names, f"{service['metadata']['name']}: {p['targetPort']}"
    monitor = one(objects, "ServiceMonitor")
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    scraped = [s for s in objects if s["kind"] == "Service"
               and selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
               and endpoint["port"] in {p["name"] for p in s["spec"]["ports"]}]
    assert [s["metadata"]["name"] for s in scraped] == ["florence2-server"], "exactly one scraped Service"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rollout_and_disruptions_keep_capacity(overlay: str, rendered: dict[str, list[Obj]]) -> None:
    objects = rendered[overlay]
    deployment = one(objects, "Deployment")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    pdb = one(objects, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"]["maxUnavailable"] == 1
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] >= 2, "with one pod the PDB would block every drain"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_scales_the_deployment_on_served_metrics(overlay: str, rendered: dict[str, list[Obj]]) -> None:
    objects = rendered[overlay]
    hpa = one(objects, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "florence2-server"}
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    pods_metrics = {m["pods"]["metric"]["name"] for m in hpa["metrics"] if m["type"] == "Pods"}
    assert "florence_queue_depth" in pods_metrics
    assert pods_metrics <= registered_gauges(), "a Pods metric the server does not export"
    adapter = adapter_rules(rendered["prometheus-adapter"])
    assert pods_metrics <= set(adapter), f"no prometheus-adapter rule serves {pods_metrics - set(adapter)}"
    resource_metrics = {m["resource"]["name"] for m in hpa["metrics"] if m["type"] == "Resource"}
    for name in resource_metrics:  # Utilization is relative to the request
        assert server(objects)["resources"]["requests"][name]
    assert (OVERLAYS[overlay] == "cpu") == ("cpu" in resource_metrics)
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    assert hpa["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 0


def adapter_rules(objects: list[Obj]) -> dict[str, Obj]:
    """prometheus-adapter's rules by the metric name they serve, checked against the adapter's rule format."""
    config = yaml.safe_load(one(objects, "ConfigMap", "florence-serve-adapter-config")["data"]["config.yaml"])
    assert set(config) == {"rules"}
    served = {}
    for rule in config["rules"]:
        assert set(rule) == {"seriesQuery", "resources", "name", "metricsQuery"}, rule
        assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"},
                                                  "pod": {"resource": "pod"}}
        [series] = re.findall(r"^(\w+)\{", rule["seriesQuery"])
        assert re.fullmatch(rule["name"]["matches"], series), rule["name"]
        assert series in registered_gauges(), f"{series} is not a gauge of server/metrics.cc"
        for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            assert placeholder in rule["metricsQuery"]
        served[re.sub(rule["name"]["matches"], rule["name"]["as"], series)] = rule
    return served


def test_grpcroute_sends_the_florence_service_to_the_cluster_ip_service(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["overlays/gpu-gateway"]
    route = one(objects, "GRPCRoute")
    [rule] = route["spec"]["rules"]
    [match] = rule["matches"]
    package = re.search(r"^package ([\w.]+);", (REPO / "proto/florence/v1/florence.proto").read_text(), re.M)[1]
    assert match["method"]["service"] == f"{package}.Florence"
    [backend] = rule["backendRefs"]
    service = one(objects, "Service", backend["name"])
    assert service["spec"].get("clusterIP") != "None"
    assert backend["port"] in {p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_model_volume_and_init_container(overlay: str, rendered: dict[str, list[Obj]]) -> None:
    objects = rendered[overlay]
    spec = pod_spec(objects)
    [volume] = [v for v in spec["volumes"] if v["name"] == "models"]
    one(objects, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    [init] = spec["initContainers"]
    [mount] = [m for m in init["volumeMounts"] if m["name"] == "models"]
    assert not mount.get("readOnly") and mount["mountPath"] == "/models"
    mounts = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    args = dict(a.split("=", 1) for a in init["args"])
    for path in (init["command"][1], args["--flags"], args["--export-args"]):
        directory, key = path.rsplit("/", 1)
        config_map = one(objects, "ConfigMap", volumes[mounts[directory]]["configMap"]["name"])
        assert key in config_map["data"], path
    # The initContainer reads the server's own flag file: its --model is the export target.
    [flagfile] = [a.split("=", 1)[1] for a in server(objects)["args"] if a.startswith("--flagfile=")]
    assert args["--flags"] == flagfile
    flag_dir = flagfile.rsplit("/", 1)[0]
    assert mounts[flag_dir] == {m["mountPath"]: m["name"] for m in server(objects)["volumeMounts"]}[flag_dir]


@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_the_server_binary_accepts_the_flag_file(target: str, rendered: dict[str, list[Obj]],
                                                 tmp_path: Path) -> None:
    """absl parses the whole flag file (names and values) before it handles --version."""
    binary = Path(os.environ.get("FLORENCE_SERVER_BIN") or REPO / "build" / "server" / "florence2-server")
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"florence2-server not found at {binary}: build it first (make build), or point "
                    "$FLORENCE_SERVER_BIN at it", pytrace=False)
    flag_file = tmp_path / "server.flags"
    flag_file.write_text("\n".join(f"--{k}={v}" for k, v in server_flags(rendered[target]).items()) + "\n")
    proc = subprocess.run([str(binary), f"--flagfile={flag_file}", "--version"], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0 and "ERROR" not in proc.stderr, proc.stderr


# --- the initContainer's script ---------------------------------------------------------------------------------

FAKE_EXPORT = """\
import json, sys
from pathlib import Path
args = sys.argv[1:]
if "--fail" in args:
    sys.exit(3)
out = Path(args[args.index("--out") + 1])
out.mkdir(parents=True)
(out / "model.ts").write_text("weights")
(out / "args.json").write_text(json.dumps(args))
(out / "manifest.json").write_text("{}")
"""


def run_model_init(tmp_path: Path, export_args: str, model: Path) -> subprocess.CompletedProcess[str]:
    app = tmp_path / "app"
    (app / "tools").mkdir(parents=True, exist_ok=True)
    (app / "tools" / "florence2_export.py").write_text(FAKE_EXPORT)
    flags = tmp_path / "server.flags"
    flags.write_text(f"# comment\n--model=/elsewhere\n--model={model}\n--grace_period=30s\n")
    (tmp_path / "export.args").write_text(export_args)
    return subprocess.run([sys.executable, str(DEPLOY / "base" / "model_init.py"), f"--flags={flags}",
                           f"--export-args={tmp_path / 'export.args'}", f"--app-dir={app}"],
                          capture_output=True, text=True, timeout=60)


def test_model_init_exports_a_missing_model_into_place(tmp_path: Path) -> None:
    model = tmp_path / "models" / "florence2-base-random"
    proc = run_model_init(tmp_path, "--random base --seed 0\n", model)
    assert proc.returncode == 0, proc.stderr
    args = yaml.safe_load((model / "args.json").read_text())
    assert args[:4] == ["--random", "base", "--seed", "0"]
    assert args[args.index("--cache-dir") + 1] == str(tmp_path / "models" / ".cache")
    assert sorted(p.name for p in model.parent.iterdir()) == ["florence2-base-random"], "staging left behind"


def test_model_init_keeps_a_complete_model(tmp_path: Path) -> None:
    model = tmp_path / "models" / "m"
    model.mkdir(parents=True)
    (model / "manifest.json").write_text("{}")
    proc = run_model_init(tmp_path, "--fail", model)  # the export would fail if it ran
    assert proc.returncode == 0, proc.stderr
    assert "nothing to export" in proc.stdout
    assert sorted(p.name for p in model.iterdir()) == ["manifest.json"]


def test_model_init_replaces_an_unfinished_model(tmp_path: Path) -> None:
    model = tmp_path / "models" / "m"
    model.mkdir(parents=True)
    (model / "model.ts").write_text("half")
    (tmp_path / "app" / ".cache").mkdir(parents=True)
    proc = run_model_init(tmp_path, "--random tiny", model)
    assert proc.returncode == 0, proc.stderr
    assert (model / "manifest.json").is_file() and (model / "model.ts").read_text() == "weights"
    args = yaml.safe_load((model / "args.json").read_text())
    assert args[args.index("--cache-dir") + 1] == str(tmp_path / "app" / ".cache"), "the image's cache first"


def test_model_init_fails_with_the_export_and_leaves_nothing(tmp_path: Path) -> None:
    model = tmp_path / "models" / "m"
    proc = run_model_init(tmp_path, "--random base --fail", model)
    assert proc.returncode != 0
    assert not model.exists()
    assert list(model.parent.iterdir()) == []


def test_model_init_refuses_an_out_argument(tmp_path: Path) -> None:
    proc = run_model_init(tmp_path, "--random base --out /models/x", tmp_path / "models" / "m")
    assert proc.returncode != 0 and "must not set --out" in proc.stderr
