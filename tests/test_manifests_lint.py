"""The image and deployment files: linters (hadolint, shellcheck, Kubernetes schemas) and the conventions they
cannot see (grace periods, /dev/shm, non-root, exit-code policies, pinned dependencies, valid parameters)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from job.params import Seq2SeqParams

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = sorted((REPO / "k8s").glob("*.yaml"))
SCRIPTS = [REPO / "entrypoint.sh", *sorted((REPO / "scripts").glob("*.sh")), *sorted((REPO / "bench").glob("*.sh"))]


def tool(name: str) -> str:
    """A linter from this environment's bin folder (pyproject's dev extra), else from PATH."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]'")
    return found


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)


def load_module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lint_manifests = load_module(REPO / "scripts" / "lint_manifests.py")


# ------------------------------------------------------------------------------------------------- linters
def test_hadolint_passes_the_dockerfile_and_catches_a_bad_one(tmp_path: Path) -> None:
    done = run(tool("hadolint"), "Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get update && apt-get install -y curl\nUSER root\n")
    found = run(tool("hadolint"), str(bad)).stdout
    assert "DL3006" in found and "DL3008" in found and "DL3002" in found


def test_every_ignored_hadolint_rule_has_a_comment() -> None:
    lines = (REPO / "Dockerfile").read_text().splitlines()
    for index, line in enumerate(lines):
        if "hadolint ignore=" in line:
            for rule in line.split("=", 1)[1].split(","):
                assert any(rule.strip() in prev for prev in lines[max(0, index - 4) : index]), rule


def test_shellcheck_passes_the_entrypoint_and_scripts(tmp_path: Path) -> None:
    done = run(tool("shellcheck"), *map(str, SCRIPTS))
    assert done.returncode == 0, done.stdout + done.stderr
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/usr/bin/env bash\nrm -rf $1/*\n")
    assert "SC2086" in run(tool("shellcheck"), str(bad)).stdout


def test_manifests_validate_strictly_against_kubernetes_schemas(tmp_path: Path) -> None:
    assert {p.name for p in MANIFESTS} >= {"job.yaml", "pytorchjob.yaml", "indexed-job.yaml", "configmap.yaml"}
    assert [problem for path in MANIFESTS for problem in lint_manifests.lint_file(path)] == []
    # the validator rejects unknown fields, in core objects and inside the PyTorchJob's pod templates
    cases = [
        (
            "job.yaml",
            "terminationGracePeriodSeconds",
            "terminationGracePeriodSecond",
            "'terminationGracePeriodSecond' was unexpected",
        ),
        ("pytorchjob.yaml", "mountPath: /out", "mountPth: /out", "'mountPath' is a required property"),
    ]
    for name, field, typo, message in cases:
        bad = tmp_path / name
        bad.write_text((REPO / "k8s" / name).read_text().replace(field, typo, 1))
        assert message in " ".join(lint_manifests.lint_file(bad))


# ------------------------------------------------------------------------------------------------- k8s rules
def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of every pod template in k8s/."""
    specs = []
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == "Job":
                specs.append((f"{path.name} Job", doc["spec"]["template"]["spec"]))
            elif doc and doc["kind"] == "PyTorchJob":
                for role, replica in doc["spec"]["pytorchReplicaSpecs"].items():
                    specs.append((f"{path.name} {role}", replica["template"]["spec"]))
    return specs


@pytest.mark.parametrize(("where", "spec"), pod_specs(), ids=[w for w, _ in pod_specs()])
def test_pod_templates_follow_the_conventions(where: str, spec: dict[str, Any]) -> None:
    assert spec["terminationGracePeriodSeconds"] >= 120  # save a checkpoint after SIGTERM (SageMaker gives 120 s)
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    volumes = {v["name"]: v for v in spec["volumes"]}
    (container,) = spec["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["args"] == ["train"]
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert limits["nvidia.com/gpu"] == requests["nvidia.com/gpu"] and "memory" in limits
    env = {e["name"]: e for e in container["env"]}
    for name in ("HF_TOKEN", "AWS_SECRET_ACCESS_KEY"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "seq2seq-credentials", name
    job_params = {k[len("SEQ2SEQ_") :].lower() for k in env if k.startswith("SEQ2SEQ_")} - {"params"}
    assert job_params <= set(Seq2SeqParams.model_fields)
    assert env["SEQ2SEQ_PARAMS"]["value"].startswith(mounts_of(container, "params"))


def mounts_of(container: dict[str, Any], volume: str) -> str:
    return next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume)


def test_jobs_fail_fast_on_bad_input_and_retry_preemption() -> None:
    for path in (REPO / "k8s/job.yaml", REPO / "k8s/indexed-job.yaml"):
        job = next(d for d in yaml.safe_load_all(path.read_text()) if d["kind"] == "Job")
        spec = job["spec"]
        assert spec["backoffLimit"] >= 1 and spec["activeDeadlineSeconds"] > 0 and spec["ttlSecondsAfterFinished"] > 0
        rules = spec["podFailurePolicy"]["rules"]
        assert rules[0] == {
            "action": "FailJob",
            "onExitCodes": {"containerName": "train", "operator": "In", "values": [2]},
        }
        assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]} in rules
        assert spec["template"]["spec"]["restartPolicy"] == "Never"
    indexed = [d for d in yaml.safe_load_all((REPO / "k8s/indexed-job.yaml").read_text())]
    service, job = indexed
    pod = job["spec"]["template"]
    assert service["spec"]["clusterIP"] == "None" and pod["spec"]["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["NNODES"] == str(job["spec"]["completions"]) == str(job["spec"]["parallelism"])
    assert env["MASTER_ADDR"] == f"{job['metadata']['name']}-0.{service['metadata']['name']}"


def test_configmap_params_are_valid_job_parameters() -> None:
    docs = yaml.safe_load_all((REPO / "k8s/configmap.yaml").read_text())
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    params = Seq2SeqParams(**json.loads(configmap["data"]["params.json"]))
    assert params.project_name.startswith("/out/") and params.data_path == "/data"


# ------------------------------------------------------------------------------------------------- the image
def test_dockerfile_conventions() -> None:
    text = (REPO / "Dockerfile").read_text()
    instructions = [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    assert instructions[-2:] == ['ENTRYPOINT ["/usr/bin/tini", "--", "/app/entrypoint.sh"]', 'CMD ["train"]']
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users == ["${RUN_AS}"] and "ARG RUN_AS=${APP_UID}" in text and "ARG APP_UID=1000" in text
    assert "HF_HOME=/cache/huggingface" in text and "-c /tmp/constraints.txt" in text
    assert "[bitsandbytes,deepspeed,gcs,loggers]" in text and "DS_BUILD_OPS=0" in text
    for line in instructions:  # no credentials baked into layers
        if line.startswith(("ENV", "ARG")):
            assert not re.search(r"TOKEN|SECRET|PASSWORD|ACCESS_KEY|API_KEY", line), line


def test_dockerignore_admits_exactly_what_the_dockerfile_copies() -> None:
    allowed = [
        line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")
    ]
    assert (REPO / ".dockerignore").read_text().splitlines()[2] == "*"
    sources = []
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += [s for s in line.split()[1:-1] if not s.startswith("--")]
    assert sources and sorted(set(sources)) == sorted(allowed)
    assert all((REPO / s).exists() for s in sources)


def test_constraints_pin_every_dependency_of_the_image() -> None:
    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    pins = {}
    for line in (REPO / "constraints/image.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version), line
            pins[norm(name)] = version
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in ("bitsandbytes", "deepspeed", "gcs", "loggers"):
        wanted += project["optional-dependencies"][extra]
    names = {norm(re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0]) for req in wanted}
    assert sorted(names - set(pins)) == [], "run python scripts/lock_image.py"
    assert "+" not in pins["torch"] and pins["triton"]  # PyPI's CUDA build of torch and its triton


# ------------------------------------------------------------------------------------------------- examples
def test_sagemaker_example_builds_a_spot_estimator_with_valid_hyperparameters() -> None:
    example = load_module(REPO / "examples" / "sagemaker_launch.py")
    args = example.parse_args(
        [
            "--image-uri",
            "1.dkr.ecr.us-east-1.amazonaws.com/seq2seq-job:1",
            "--role",
            "arn:r",
            "--train",
            "s3://b/train.csv",
            "--validation",
            "s3://b/valid.csv",
            "--output",
            "s3://b/out/",
            "-p",
            "epochs=5",
        ]
    )
    kwargs = example.estimator_kwargs(args)
    assert kwargs["use_spot_instances"] is True and kwargs["max_wait"] >= kwargs["max_run"]
    assert kwargs["checkpoint_s3_uri"] == "s3://b/out/checkpoints"
    assert kwargs["checkpoint_local_path"] == "/opt/ml/checkpoints"
    hyper = kwargs["hyperparameters"]
    assert all(isinstance(v, str) for v in hyper.values()) and hyper["epochs"] == "5"
    params = Seq2SeqParams(data_path="/opt/ml/input/data/train", **hyper)
    assert params.epochs == 5.0 and params.lr == 3e-4
    assert example.channels(args) == {"train": "s3://b/train.csv", "validation": "s3://b/valid.csv"}


def test_vertex_example_is_a_valid_worker_pool_spec() -> None:
    spec = json.loads((REPO / "examples" / "vertex_custom_job.json").read_text())
    pools = spec["workerPoolSpecs"]
    assert pools[0]["replicaCount"] == 1 and spec["baseOutputDirectory"]["outputUriPrefix"].startswith("gs://")
    assert len({json.dumps(p["containerSpec"], sort_keys=True) for p in pools}) == 1  # one image, one job
    container = pools[0]["containerSpec"]
    assert container["args"] == ["train"] and "command" not in container  # keep the image's ENTRYPOINT
    values = {e["name"][len("SEQ2SEQ_") :].lower(): e["value"] for e in container["env"]}
    assert all(e["name"].startswith("SEQ2SEQ_") for e in container["env"])
    params = Seq2SeqParams(**values)
    assert params.data_path.startswith("/gcs/") and params.mixed_precision == "bf16"
