"""Validate Kubernetes manifests against the Kubernetes API schemas, strictly (unknown fields are errors).

    python scripts/lint_manifests.py [FILE.yaml ...]      # default: k8s/*.yaml

Core objects (Job, Service, ConfigMap, Secret, PersistentVolumeClaim, ServiceAccount) are checked with
kubernetes-validate against the oldest Kubernetes release the manifests support (podFailurePolicy is GA
since 1.31) and the newest one the validator knows. A Kubeflow PyTorchJob is a custom resource without a
schema there, so its structure is checked here and each replica's pod template is validated as a core Pod.
Any other kind without a schema is an error, not a skip.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

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
        if (doc.get("apiVersion"), doc.get("kind")) == PYTORCHJOB:
            problems += [f"{where}: {p}" for p in _pytorchjob_problems(doc)]
        else:
            problems += [f"{where}: {p}" for p in _schema_problems(doc)]
    return problems


def _schema_problems(doc: dict[str, Any]) -> list[str]:
    problems = []
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path) or "(top)"
            problems.append(f"invalid for Kubernetes {version}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"no schema for {doc.get('apiVersion')} {doc.get('kind')} (add a check for it here)")
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


def main(argv: list[str]) -> int:
    files = [Path(a) for a in argv] or sorted((ROOT / "k8s").glob("*.yaml"))
    problems = [p for f in files for p in lint_file(f)]
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{len(files)} manifest files, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
