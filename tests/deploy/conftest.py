"""Offline rendering and schema validation of deploy/ for tests/deploy/test_manifests.py.

kustomize renders a kustomization; kubeconform validates each object it yields against strict JSON schemas that
are made here, at test time, from pinned upstream sources that tools/setup/deploy_tools.sh copies out of Go
modules into .tools/deploy: the Kubernetes OpenAPI (swagger 2.0) document of k8s.io/kubernetes and the CRDs of
the Prometheus Operator (ServiceMonitor) and of Gateway API (GRPCRoute). "Strict" is what kubeconform's own
published schemas mean by it: an object schema that lists its properties admits no other, so a misspelled field
fails instead of being ignored. Nothing here touches the network.

What these schemas do not check: CEL rules (x-kubernetes-validations) in the CRDs and the API server's own
validation code (e.g. that a Service port is at most 65535 is in the schema; that a Deployment's selector matches
its template labels is not). The semantic tests in test_manifests.py cover what matters of the latter.
"""
from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO / ".tools" / "bin"
SOURCES = REPO / ".tools" / "deploy"
INSTALL_HINT = "install them with tools/setup/deploy_tools.sh (pinned, from the Go module proxy; needs Go)"

Gvk = tuple[str, str, str]  # (group, version, kind); group "" is the core API group


def tool(name: str) -> Path:
    path = TOOLS_BIN / name
    if not path.is_file():
        pytest.fail(f"{path.relative_to(REPO)} is missing: {INSTALL_HINT}", pytrace=False)
    return path


def gvk_of(obj: dict[str, Any]) -> Gvk:
    group, _, version = obj["apiVersion"].rpartition("/")
    return group, version, obj["kind"]


def schema_file_name(gvk: Gvk) -> str:
    """kubeconform's {{ .ResourceKind }}{{ .KindSuffix }}.json: deployment-apps-v1.json, service-v1.json."""
    group, version, kind = gvk
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind.lower()}{suffix}.json".lower()


def _walk_strict(node: Any) -> None:
    """Closes every object schema that lists properties (unless it preserves unknown fields), recursively."""
    if isinstance(node, list):
        for item in node:
            _walk_strict(item)
        return
    if not isinstance(node, dict):
        return
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        node["additionalProperties"] = False
    if node.get("nullable") is True and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    for key in ("properties", "patternProperties", "definitions"):
        for child in node.get(key, {}).values():
            _walk_strict(child)
    for key in ("items", "additionalProperties", "not"):
        _walk_strict(node.get(key))
    for key in ("allOf", "anyOf", "oneOf"):
        _walk_strict(node.get(key, []))


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            yield ref.removeprefix("#/definitions/")
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


class SchemaStore:
    """Strict JSON schemas by (group, version, kind), from the pinned Kubernetes OpenAPI document and CRDs."""

    # Types whose swagger form ("type": "string") is narrower than what the API server accepts in YAML.
    _WIDENED = {
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        "io.k8s.apimachinery.pkg.api.resource.Quantity": {"oneOf": [{"type": "string"}, {"type": "number"}]},
    }

    def __init__(self, sources: Path) -> None:
        listing = sources / "sources.txt"
        if not listing.is_file():
            pytest.fail(f"{listing.relative_to(REPO)} is missing (the schema sources): {INSTALL_HINT}", pytrace=False)
        self.provenance = listing.read_text().strip()
        swagger = json.loads((sources / "kubernetes" / "swagger.json").read_text())
        self._definitions: dict[str, Any] = swagger["definitions"]
        for name, widened in self._WIDENED.items():
            self._definitions[name] = widened
        self._builtin: dict[Gvk, str] = {}
        for name, definition in self._definitions.items():
            for g in definition.get("x-kubernetes-group-version-kind", []):
                self._builtin[(g["group"], g["version"], g["kind"])] = name
        self._crd: dict[Gvk, dict[str, Any]] = {}
        for path in sorted((sources / "crds").glob("*.yaml")):
            for crd in yaml.safe_load_all(path.read_text()):
                spec = crd["spec"]
                for v in spec["versions"]:
                    if v.get("served") and "schema" in v:
                        self._crd[(spec["group"], v["name"], spec["names"]["kind"])] = v["schema"]["openAPIV3Schema"]

    def schema(self, gvk: Gvk) -> dict[str, Any] | None:
        if gvk in self._crd:
            schema = copy.deepcopy(self._crd[gvk])
            _walk_strict(schema)
            return schema
        if gvk not in self._builtin:
            return None
        root = self._builtin[gvk]
        needed, todo = set(), [root]
        while todo:
            name = todo.pop()
            if name not in needed:
                needed.add(name)
                todo.extend(_refs(self._definitions[name]))
        schema = copy.deepcopy(self._definitions[root])
        schema["definitions"] = {name: copy.deepcopy(self._definitions[name]) for name in sorted(needed)}
        _walk_strict(schema)
        return schema

    def write(self, gvks: set[Gvk], directory: Path) -> list[Gvk]:
        """Writes the schema of each gvk into directory under kubeconform's file name; returns those it lacks."""
        missing = []
        for gvk in sorted(gvks):
            schema = self.schema(gvk)
            if schema is None:
                missing.append(gvk)
            else:
                (directory / schema_file_name(gvk)).write_text(json.dumps(schema))
        return missing


class Validator:
    """kubeconform, strict, against a SchemaStore's schemas only (no schema location on the network)."""

    def __init__(self, store: SchemaStore, directory: Path) -> None:
        self.store = store
        self.directory = directory
        self.binary = tool("kubeconform")

    def validate(self, objects: list[dict[str, Any]], work: Path) -> list[dict[str, Any]]:
        """kubeconform's result for each object (status, msg, validationErrors), in the order given."""
        missing = self.store.write({gvk_of(o) for o in objects}, self.directory)
        assert not missing, f"no schema in the pinned sources for {missing}:\n{self.store.provenance}"
        manifest = work / "objects.yaml"
        manifest.write_text(yaml.safe_dump_all(objects, sort_keys=False))
        proc = subprocess.run(
            [str(self.binary), "-strict", "-output", "json", "-verbose",
             "-schema-location", str(self.directory / "{{ .ResourceKind }}{{ .KindSuffix }}.json"), str(manifest)],
            capture_output=True, text=True, timeout=120)
        try:
            results = json.loads(proc.stdout)["resources"]
        except (json.JSONDecodeError, KeyError) as e:
            raise AssertionError(f"kubeconform gave no JSON report (rc {proc.returncode}): {proc.stdout}"
                                 f"{proc.stderr}") from e
        assert len(results) == len(objects), f"kubeconform reported {len(results)} of {len(objects)} objects"
        return results


def render(kustomization: Path) -> list[dict[str, Any]]:
    """The objects `kustomize build` yields for a kustomization directory."""
    proc = subprocess.run([str(tool("kustomize")), "build", str(kustomization)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kustomize build {kustomization.relative_to(REPO)} failed:\n{proc.stderr}"
    return [o for o in yaml.safe_load_all(proc.stdout) if o is not None]


@pytest.fixture(scope="session")
def kustomize_build() -> Callable[[Path], list[dict[str, Any]]]:
    tool("kustomize")  # fail here, with the install hint, before any test uses it
    return render


@pytest.fixture(scope="session")
def validator(tmp_path_factory: pytest.TempPathFactory) -> Validator:
    return Validator(SchemaStore(SOURCES), tmp_path_factory.mktemp("schemas"))
