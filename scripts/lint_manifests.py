"""Validate Kubernetes manifests against the Kubernetes API schemas, strictly (unknown fields are errors).

    python scripts/lint_manifests.py [FILE.yaml ...]      # default: k8s/*.yaml

Core objects (Job, Service, ConfigMap, Secret, PersistentVolumeClaim, ServiceAccount) are checked with
kubernetes-validate against the oldest Kubernetes release the manifests support (podFailurePolicy is GA
since 1.31) and the newest one the validator knows.

Custom resources are checked against their own schemas, vendored in k8s/schemas/ (k8s/schemas/README.md):
TrainJob and TrainingRuntime (Kubeflow Trainer), JobSet, Katib's Experiment. Unknown fields are errors where
the API server rejects them (``kubectl apply`` validates strictly since Kubernetes 1.27): in every object schema
that neither lists ``additionalProperties`` nor sets ``x-kubernetes-preserve-unknown-fields``. The CRDs' CEL
rules that apply on create are evaluated (CEL_RULES; a rule this file does not know is a problem, so a newer
schema cannot slip rules past it), list-map keys must be unique, ``metadata`` is checked as a core ObjectMeta,
and the core objects embedded in a resource (a JobSet's Job templates, a Katib trial) are validated as what
they are. A Kubeflow PyTorchJob (Training Operator v1, no vendored schema) has its structure checked here
and each replica's pod template validated as a core Pod. Any other kind without a schema is an error, not a
skip.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
VERSIONS = ("1.31", kubernetes_validate.latest_version())
PYTORCHJOB = ("kubeflow.org/v1", "PyTorchJob")
REPLICA_RESTART_POLICIES = ("Always", "OnFailure", "Never", "ExitCode")
SPEC_FIELDS = ("pytorchReplicaSpecs", "runPolicy", "elasticPolicy", "nprocPerNode")
RUN_POLICY_FIELDS = (
    "cleanPodPolicy",
    "ttlSecondsAfterFinished",
    "activeDeadlineSeconds",
    "backoffLimit",
    "schedulingPolicy",
    "suspend",
    "managedBy",
)
SCHEMA_DIR = ROOT / "k8s" / "schemas"


def lint_file(path: Path) -> list[str]:
    """Every problem found in one YAML file, each as 'file: kind/name: message'."""
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except yaml.YAMLError as exc:
        return [f"{path}: not valid YAML: {exc}"]
    if not docs:
        return [f"{path}: no Kubernetes objects"]
    problems: list[str] = []
    for doc in docs:
        where = f"{path}: {doc.get('kind', '?')}/{(doc.get('metadata') or {}).get('name', '?')}"
        problems += [f"{where}: {p}" for p in doc_problems(doc)]
    return problems


def doc_problems(doc: dict[str, Any]) -> list[str]:
    """Every problem in one object, by the schema of its apiVersion and kind."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key == PYTORCHJOB:
        return _pytorchjob_problems(doc)
    resource = custom_resources().get(key)
    if resource is not None:
        return _custom_resource_problems(doc, resource)
    return _schema_problems(doc)


def _schema_problems(doc: dict[str, Any]) -> list[str]:
    problems = []
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path) or "(top)"
            problems.append(f"invalid for Kubernetes {version}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"no schema for {doc.get('apiVersion')} {doc.get('kind')} (vendor one in k8s/schemas/)")
            break
    return problems


def _pytorchjob_problems(doc: dict[str, Any]) -> list[str]:
    """The PyTorchJob fields the training operator reads, then each pod template as a Pod."""
    spec = doc.get("spec") or {}
    replicas = spec.get("pytorchReplicaSpecs")
    if not isinstance(replicas, dict) or "Master" not in replicas:
        return ["spec.pytorchReplicaSpecs needs a Master replica spec"]
    problems = [f"unknown spec field {key}" for key in spec if key not in SPEC_FIELDS]
    run_policy = spec.get("runPolicy") or {}
    problems += [f"unknown runPolicy field {key}" for key in run_policy if key not in RUN_POLICY_FIELDS]
    for key in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        if key in run_policy and (not isinstance(run_policy[key], int) or run_policy[key] < 0):
            problems.append(f"runPolicy.{key} must be a non-negative integer")
    for role, replica in replicas.items():
        if role not in ("Master", "Worker"):
            problems.append(f"unknown replica type {role} (Master or Worker)")
            continue
        count = replica.get("replicas")
        if not isinstance(count, int) or count < 1 or (role == "Master" and count != 1):
            problems.append(f"{role}.replicas must be {'1' if role == 'Master' else 'a positive integer'}")
        if replica.get("restartPolicy") not in REPLICA_RESTART_POLICIES:
            problems.append(f"{role}.restartPolicy must be one of {', '.join(REPLICA_RESTART_POLICIES)}")
        template = replica.get("template") or {}
        containers = (template.get("spec") or {}).get("containers") or []
        if not any(c.get("name") == "pytorch" for c in containers):
            problems.append(f"{role}: the training container must be named 'pytorch' (the operator looks for it)")
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": template.get("metadata") or {"name": role.lower()},
            "spec": template.get("spec"),
        }
        problems += [f"{role}.template: {p}" for p in _schema_problems(pod)]
    return problems


# ---------------------------------------------------------------------------------------- custom resources
class CustomResource(NamedTuple):
    """A vendored schema (k8s/schemas/*.json) and the core objects inside it that kubernetes-validate checks."""

    api_version: str
    kind: str
    source: str  # "kubeflow/trainer v2.2.1", for the messages
    validator: Any  # a jsonschema validator of the strict schema
    embedded: tuple[tuple[str, str], ...]  # (path, "apiVersion/Kind" or "*": whatever its own apiVersion says)


@functools.cache
def custom_resources() -> dict[tuple[str, str], CustomResource]:
    """The vendored schemas by (apiVersion, kind)."""
    out = {}
    for path in sorted(SCHEMA_DIR.glob("*.json")):
        vendored = json.loads(path.read_text(encoding="utf-8"))
        source = vendored["source"]
        resource = CustomResource(
            api_version=vendored["apiVersion"],
            kind=vendored["kind"],
            source=f"{source['repository']} {source['ref']}",
            validator=_Validator(strict_schema(vendored["schema"])),
            embedded=tuple((e["path"], e["object"]) for e in vendored["embedded"]),
        )
        out[(resource.api_version, resource.kind)] = resource
    return out


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A CRD's OpenAPI schema as a JSON Schema that rejects unknown fields where the API server does.

    Every object schema without ``additionalProperties`` or ``x-kubernetes-preserve-unknown-fields`` is closed
    (``properties``-less ones too: ``torch: {}`` takes no fields). The root ``metadata`` (an ObjectMeta, which
    CRDs describe as a bare object) is left open here and validated as a core ObjectMeta instead; ``$ref``s to
    Kubernetes types that a swagger file does not define (Katib's ObjectMeta, Container) are not checked.
    """
    definitions = schema.get("definitions", {})

    def convert(node: Any) -> Any:
        if isinstance(node, list):
            return [convert(item) for item in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("properties", "definitions"):
                out[key] = {name: convert(sub) for name, sub in value.items()}
            elif key == "$ref" and value.removeprefix("#/definitions/") not in definitions:
                continue
            elif key in ("items", "additionalProperties", "not", "anyOf", "allOf", "oneOf"):
                out[key] = convert(value)
            else:
                out[key] = value
        if (
            out.get("type") == "object"
            and "additionalProperties" not in out
            and "$ref" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out

    strict = convert(schema)
    if "metadata" in strict.get("properties", {}):
        strict["properties"]["metadata"] = {"type": "object"}
    return strict


def _get(node: Any, *keys: str) -> Any:
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node


_DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
# The CEL rules of the vendored schemas that apply when an object is created, in Python. Transition rules
# (those using oldSelf) apply on update only and are skipped.
CEL_RULES: dict[str, Callable[[Any], bool]] = {
    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')": lambda s: bool(
        _DNS_1035_LABEL.fullmatch(str(_get(s, "metadata", "name") or ""))
    ),
    "size(self.metadata.name) <= 63": lambda s: len(str(_get(s, "metadata", "name") or "")) <= 63,
    "self in ['trainer.kubeflow.org/trainjob-controller', 'kueue.x-k8s.io/multikueue']": lambda s: (
        s in ("trainer.kubeflow.org/trainjob-controller", "kueue.x-k8s.io/multikueue")
    ),
    "has(self.lastUpdatedTime)": lambda s: "lastUpdatedTime" in s,
    (
        "[has(self.torch), has(self.mpi), has(self.jax), has(self.xgboost),has(self.flux)].filter(x, x).size() <= 1"
    ): lambda s: sum(k in s for k in ("torch", "mpi", "jax", "xgboost", "flux")) <= 1,
    "self >= 1": lambda s: s >= 1,
    "!(has(self.startupPolicy) && self.startupPolicy.startupPolicyOrder == 'InOrder' && "
    "self.replicatedJobs.exists(x, has(x.dependsOn)))": lambda s: (
        not (
            _get(s, "startupPolicy", "startupPolicyOrder") == "InOrder"
            and any("dependsOn" in job for job in s.get("replicatedJobs", []))
        )
    ),
    "self.templates.all(t, !has(t.metadata.namespace) || size(t.metadata.namespace) == 0)": lambda s: all(
        not _get(t, "metadata", "namespace") for t in s.get("templates", [])
    ),
}


def _cel_rules(validator: Any, rules: list[dict[str, str]], instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    for rule in rules:
        text = rule["rule"]
        if "oldSelf" in text:
            continue
        check = CEL_RULES.get(text)
        if check is None:
            yield jsonschema.ValidationError(f"CEL rule {text!r} is not checked by this linter (add it to CEL_RULES)")
            continue
        try:
            passed = check(instance)
        except (TypeError, AttributeError):
            passed = False
        if not passed:
            yield jsonschema.ValidationError(f"{rule.get('message') or 'failed rule'}: {text}")


def _list_type(validator: Any, list_type: str, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    """x-kubernetes-list-type: a map list has one entry per key (e.g. env names), a set has unique items."""
    if not isinstance(instance, list) or list_type not in ("map", "set"):
        return
    keys = schema.get("x-kubernetes-list-map-keys", [])
    seen: set[str] = set()
    for item in instance:
        key = json.dumps([_get(item, k) for k in keys] if list_type == "map" else item, sort_keys=True)
        if key in seen:
            what = ", ".join(f"{k}={_get(item, k)!r}" for k in keys) if list_type == "map" else repr(item)
            yield jsonschema.ValidationError(f"duplicate entry ({what}) in a list of unique {list_type} entries")
        seen.add(key)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, {"x-kubernetes-validations": _cel_rules, "x-kubernetes-list-type": _list_type}
)


def _custom_resource_problems(doc: dict[str, Any], resource: CustomResource, *, top: bool = True) -> list[str]:
    errors = sorted(resource.validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    problems = [
        f"invalid for {resource.source}: {'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors
    ]
    metadata = doc.get("metadata")
    if top and not (isinstance(metadata, dict) and metadata.get("name")):
        problems.append("metadata.name is required")
    elif isinstance(metadata, dict):  # an ObjectMeta, checked as the one of a core object
        problems += _schema_problems({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata})
    for path, kind in resource.embedded:
        for where, value in _at(doc, path):
            if not isinstance(value, dict):
                continue  # the schema has said what it must be
            if kind == "*":
                inner = doc_problems(value)
            else:
                api_version, _, name = kind.rpartition("/")
                inner = doc_problems(
                    {
                        "apiVersion": api_version,
                        "kind": name,
                        "metadata": value.get("metadata") or {},
                        "spec": value.get("spec"),
                    }
                )
            problems += [f"{where}: {p}" for p in inner]
    return problems


def _at(doc: dict[str, Any], path: str) -> list[tuple[str, Any]]:
    """(where, value) of every value at ``a.b[].c`` (``[]``: each item of an array)."""
    nodes: list[tuple[str, Any]] = [("", doc)]
    for part in path.split("."):
        name, items = (part[:-2], True) if part.endswith("[]") else (part, False)
        found = []
        for where, node in nodes:
            if isinstance(node, dict) and name in node:
                here = f"{where}.{name}" if where else name
                if not items:
                    found.append((here, node[name]))
                elif isinstance(node[name], list):
                    found += [(f"{here}[{i}]", item) for i, item in enumerate(node[name])]
        nodes = found
    return nodes


def main(argv: list[str]) -> int:
    files = [Path(a) for a in argv] or sorted((ROOT / "k8s").glob("*.yaml"))
    problems = [p for f in files for p in lint_file(f)]
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{len(files)} manifest files, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
