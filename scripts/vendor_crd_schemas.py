"""Vendor a custom resource's OpenAPI schema into k8s/schemas/ for scripts/lint_manifests.py (CI has no cluster
and no internet beyond PyPI, so the schemas live in the repository).

    # a CRD (kubeflow/trainer, kubernetes-sigs/jobset): its openAPIV3Schema, descriptions removed
    python scripts/vendor_crd_schemas.py crd trainer.kubeflow.org_trainjobs.yaml --version v1alpha1 \\
        --repository kubeflow/trainer --ref v2.2.1 --commit <40 hex> \\
        --path manifests/base/crds/trainer.kubeflow.org_trainjobs.yaml --out k8s/schemas/trainjob.json
    # a JobTemplateSpec inside it is left to kubernetes-validate (a core batch/v1 Job, both Kubernetes versions)
    ... --embedded 'spec.template.spec.replicatedJobs[].template=batch/v1/Job'
    # Katib's Experiment CRD has no structural schema (x-kubernetes-preserve-unknown-fields): take the
    # definitions of its Go types from the API's swagger.json instead
    python scripts/vendor_crd_schemas.py swagger swagger.json --root v1beta1.Experiment \\
        --api-version kubeflow.org/v1beta1 --kind Experiment --repository kubeflow/katib ... --out ...

Fetch the input file at the release you target (``git show <tag>:<path>`` in a clone, or the raw URL) first.
The output keeps the upstream schema as it is, less its ``description`` texts (80 % of the size) and the
subtrees named by ``--embedded``; the header records where it came from.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

EMBEDDED_STANDIN = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def strip_descriptions(node: Any) -> Any:
    """The schema without ``description`` keys (property *names* called description are kept)."""
    if isinstance(node, list):
        return [strip_descriptions(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: strip_descriptions(sub) for name, sub in value.items()}
        elif key != "description":
            out[key] = strip_descriptions(value)
    return out


def prune(schema: dict[str, Any], path: str) -> None:
    """Replace the subschema at ``a.b[].c`` (``[]``: the items of an array) by a stand-in object."""
    node = schema
    parts = [p for p in re.split(r"\.", path) if p]
    for index, part in enumerate(parts):
        name, items = (part[:-2], True) if part.endswith("[]") else (part, False)
        parent = node
        node = node["properties"][name]
        if items:
            node = node["items"]
        if index == len(parts) - 1:
            target = parent["properties"][name]
            if items:
                target["items"] = dict(EMBEDDED_STANDIN)
            else:
                parent["properties"][name] = dict(EMBEDDED_STANDIN)


def from_crd(path: Path, version: str, embedded: list[tuple[str, str]]) -> tuple[dict[str, Any], str, str, str]:
    crd = next(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    spec = crd["spec"]
    served = {v["name"]: v for v in spec["versions"]}
    if version not in served:
        raise SystemExit(f"{path}: no version {version} (has {', '.join(served)})")
    schema = strip_descriptions(served[version]["schema"]["openAPIV3Schema"])
    for subtree, _ in embedded:
        prune(schema, subtree)
    return schema, f"{spec['group']}/{version}", spec["names"]["kind"], crd["metadata"]["name"]


def from_swagger(path: Path, root: str) -> dict[str, Any]:
    definitions = strip_descriptions(json.loads(path.read_text(encoding="utf-8"))["definitions"])
    if root not in definitions:
        raise SystemExit(f"{path}: no definition {root}")
    return {"$ref": f"#/definitions/{root}", "definitions": definitions}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", choices=("crd", "swagger"))
    parser.add_argument("file", type=Path)
    parser.add_argument("--version", help="crd: the served version to take (e.g. v1alpha1)")
    parser.add_argument("--root", help="swagger: the definition of the resource (e.g. v1beta1.Experiment)")
    parser.add_argument("--api-version", help="swagger: the resource's apiVersion")
    parser.add_argument("--kind", help="swagger: the resource's kind")
    parser.add_argument(
        "--embedded",
        action="append",
        default=[],
        metavar="PATH=APIVERSION/KIND",
        help="crd: a core object inside the resource, validated by kubernetes-validate",
    )
    parser.add_argument("--repository", required=True)
    parser.add_argument("--ref", required=True, help="the release tag")
    parser.add_argument("--commit", required=True, help="the commit the tag points at")
    parser.add_argument("--path", required=True, help="the file's path in the repository")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    embedded = [tuple(item.split("=", 1)) for item in args.embedded]  # swagger: recorded, nothing to prune
    if args.source == "crd":
        if not args.version:
            parser.error("crd needs --version")
        schema, api_version, kind, crd_name = from_crd(args.file, args.version, embedded)
    else:
        if not (args.root and args.api_version and args.kind):
            parser.error("swagger needs --root, --api-version and --kind")
        schema, api_version, kind, crd_name = from_swagger(args.file, args.root), args.api_version, args.kind, None
    out = {
        "$comment": "Generated by scripts/vendor_crd_schemas.py; regenerate it, don't edit it (k8s/schemas/README.md)",
        "apiVersion": api_version,
        "kind": kind,
        "source": {
            "repository": args.repository,
            "ref": args.ref,
            "commit": args.commit,
            "path": args.path,
            "crd": crd_name,
            "format": args.source,
        },
        "embedded": [{"path": p, "object": o} for p, o in embedded],
        "schema": schema,
    }
    args.out.write_text(json.dumps(out, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{args.out}: {api_version} {kind} from {args.repository}@{args.ref}, {args.out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
