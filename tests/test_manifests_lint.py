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
    assert {p.name for p in MANIFESTS} >= {
        "job.yaml",
        "pytorchjob.yaml",
        "indexed-job.yaml",
        "configmap.yaml",
        "trainjob.yaml",
        "trainingruntime.yaml",
        "jobset.yaml",
        "katib-experiment.yaml",
    }
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


# ------------------------------------------------------------------------------------------- custom resources
CRD_CASES = [  # (file, text, replacement, a problem it must cause)
    (
        "trainjob.yaml",
        "numNodes: 2",
        "numNode: 2",
        "TrainJob/seq2seq-train: invalid for kubeflow/trainer v2.2.1: spec.trainer: Additional properties are not "
        "allowed ('numNode' was unexpected)",
    ),
    ("trainjob.yaml", "numNodes: 2", 'numNodes: "2"', "spec.trainer.numNodes: '2' is not of type 'integer'"),
    (
        "trainjob.yaml",
        "name: seq2seq-train #",
        "name: Seq2seq-train #",
        "metadata.name must match RFC 1035 DNS label format",
    ),  # a CEL rule of the CRD
    (
        "trainjob.yaml",
        "configMap:\n                              name: seq2seq-params",
        "configMap:\n                              nme: seq2seq-params",  # deep in runtimePatches' pod spec patch
        "volumes.0.configMap: Additional properties are not allowed ('nme' was unexpected)",
    ),
    (
        "trainjob.yaml",
        "      - name: HF_TOKEN",
        "      - name: SEQ2SEQ_PARAMS",
        "spec.trainer.env: duplicate entry (name='SEQ2SEQ_PARAMS')",
    ),  # a list-map key twice
    (
        "trainingruntime.yaml",
        "torch: {}",
        "torch: {gpus: 4}",
        "spec.mlPolicy.torch: Additional properties are not allowed ('gpus' was unexpected)",
    ),
    (
        "trainingruntime.yaml",
        "terminationGracePeriodSeconds: 180",
        "terminationGracePeriodSecond: 180",
        "spec.template.spec.replicatedJobs[0].template: invalid for Kubernetes 1.31: spec.template.spec: Additional "
        "properties are not allowed ('terminationGracePeriodSecond' was unexpected)",
    ),  # the embedded core Job
    (
        "jobset.yaml",
        "maxRestarts: 0",
        "maxRestart: 0",
        "invalid for kubernetes-sigs/jobset v0.11.1: spec.failurePolicy: Additional properties are not allowed",
    ),
    ("jobset.yaml", "action: FailJobSet", "action: FailJobset", "'FailJobset' is not one of ['FailJobSet'"),
    (
        "katib-experiment.yaml",
        "objectiveMetricName:",
        "objectiveMetricNam:",
        "invalid for kubeflow/katib v0.19.0: spec.objective: Additional properties are not allowed "
        "('objectiveMetricNam' was unexpected)",
    ),
    (
        "katib-experiment.yaml",
        "backoffLimit: 0",
        "backofLimit: 0",
        "spec.trialTemplate.trialSpec: invalid for Kubernetes 1.31: spec: Additional properties are not allowed "
        "('backofLimit' was unexpected)",
    ),  # the trial Job, validated as a core Job
]


@pytest.mark.parametrize(
    ("name", "text", "replacement", "message"), CRD_CASES, ids=[f"{c[0]}:{c[2][:24]}" for c in CRD_CASES]
)
def test_custom_resources_are_validated_against_their_vendored_crd_schemas(
    tmp_path: Path, name: str, text: str, replacement: str, message: str
) -> None:
    original = (REPO / "k8s" / name).read_text()
    assert text in original
    bad = tmp_path / name
    bad.write_text(original.replace(text, replacement, 1))
    problems = lint_manifests.lint_file(bad)
    assert any(message in p for p in problems), problems


def test_every_custom_resource_kind_has_a_vendored_schema_with_its_origin() -> None:
    kinds = {(d["apiVersion"], d["kind"]) for path in MANIFESTS for d in yaml.safe_load_all(path.read_text()) if d}
    resources = lint_manifests.custom_resources()
    custom = {(api, kind) for api, kind in kinds if api not in ("v1", "batch/v1")}
    assert custom <= {*resources, lint_manifests.PYTORCHJOB}
    assert set(resources) >= {
        ("trainer.kubeflow.org/v1alpha1", "TrainJob"),
        ("trainer.kubeflow.org/v1alpha1", "TrainingRuntime"),
        ("jobset.x-k8s.io/v1alpha2", "JobSet"),
        ("kubeflow.org/v1beta1", "Experiment"),
    }
    for path in sorted((REPO / "k8s" / "schemas").glob("*.json")):
        source = json.loads(path.read_text())["source"]
        assert re.fullmatch(r"[0-9a-f]{40}", source["commit"]) and source["ref"].startswith("v"), path.name
        assert source["repository"] in ("kubeflow/trainer", "kubernetes-sigs/jobset", "kubeflow/katib"), path.name
        assert path.stat().st_size < 64_000, f"{path.name}: vendor the schema without descriptions"


def test_a_cel_rule_the_linter_does_not_know_is_a_problem_not_a_pass() -> None:
    schema = lint_manifests.strict_schema(
        {
            "type": "object",
            "properties": {"n": {"type": "integer"}},
            "x-kubernetes-validations": [{"rule": "self.n > 1"}, {"rule": "self.n == oldSelf.n"}],
        }
    )
    messages = [e.message for e in lint_manifests._Validator(schema).iter_errors({"n": 2})]
    assert messages == ["CEL rule 'self.n > 1' is not checked by this linter (add it to CEL_RULES)"]  # oldSelf: update
    messages = [e.message for e in lint_manifests._Validator(schema).iter_errors({"n": 2, "m": 1})]
    assert "Additional properties are not allowed ('m' was unexpected)" in messages  # closed: no field m


# ------------------------------------------------------------------------------------------------- k8s rules
def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of every pod template in k8s/, in Jobs, PyTorchJobs, TrainingRuntimes, JobSets, trials."""
    return [
        (f"{path.name} {where}", spec)
        for path in MANIFESTS
        for doc in yaml.safe_load_all(path.read_text())
        if doc
        for where, spec in _pod_specs_of(doc)
    ]


def _pod_specs_of(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    kind, spec = doc["kind"], doc.get("spec") or {}
    if kind == "Job":
        return [("Job", spec["template"]["spec"])]
    if kind == "PyTorchJob":
        return [(role, replica["template"]["spec"]) for role, replica in spec["pytorchReplicaSpecs"].items()]
    if kind in ("TrainingRuntime", "JobSet"):
        jobs = spec["template"]["spec"]["replicatedJobs"] if kind == "TrainingRuntime" else spec["replicatedJobs"]
        return [(f"{kind} {job['name']}", job["template"]["spec"]["template"]["spec"]) for job in jobs]
    if kind == "Experiment":
        return [(f"Experiment trial {w}", s) for w, s in _pod_specs_of(spec["trialTemplate"]["trialSpec"])]
    return []


def manifest(name: str, kind: str) -> dict[str, Any]:
    return next(d for d in yaml.safe_load_all((REPO / "k8s" / name).read_text()) if d and d["kind"] == kind)


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


# ------------------------------------------------------------------------ Kubeflow Trainer v2, JobSet, Katib
def _jobset_specs() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("trainingruntime.yaml", manifest("trainingruntime.yaml", "TrainingRuntime")["spec"]["template"]["spec"]),
        ("jobset.yaml", manifest("jobset.yaml", "JobSet")["spec"]),
    ]


@pytest.mark.parametrize(("name", "jobset"), _jobset_specs(), ids=[n for n, _ in _jobset_specs()])
def test_jobsets_fail_fast_on_bad_input_and_retry_preemption(name: str, jobset: dict[str, Any]) -> None:
    # exit 2 fails the Job (reason PodFailurePolicy: the only FailJob rule), and that reason fails the JobSet
    assert jobset["failurePolicy"]["rules"][0] == {
        "name": "badInput",
        "action": "FailJobSet",
        "onJobFailureReasons": ["PodFailurePolicy"],
    }
    (job,) = jobset["replicatedJobs"]
    spec = job["template"]["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": container["name"], "operator": "In", "values": [2]},
    }
    assert [r for r in rules if r["action"] == "FailJob"] == [rules[0]]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]} in rules
    assert {
        "action": "Ignore",
        "onExitCodes": {"containerName": container["name"], "operator": "In", "values": [143]},
    } in rules
    assert spec["completionMode"] == "Indexed" and spec["backoffLimit"] >= 1
    assert spec["template"]["spec"]["restartPolicy"] == "Never" and jobset["ttlSecondsAfterFinished"] > 0


def test_trainingruntime_is_the_torch_policy_on_the_job_and_container_trainer_fills_in() -> None:
    runtime = manifest("trainingruntime.yaml", "TrainingRuntime")
    assert runtime["spec"]["mlPolicy"] == {"numNodes": 1, "torch": {}}  # torchrun's PET_* contract, nothing else
    (job,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    # Trainer's torch plugin finds the Job by the ancestor label and the container by the name "node"
    assert job["name"] == "node" and job["template"]["metadata"]["labels"] == {
        "trainer.kubeflow.org/trainjob-ancestor-step": "trainer"
    }
    assert [c["name"] for c in job["template"]["spec"]["template"]["spec"]["containers"]] == ["node"]


def test_trainjob_runs_this_image_on_the_runtime_in_k8s() -> None:
    trainjob = manifest("trainjob.yaml", "TrainJob")
    runtime = manifest("trainingruntime.yaml", "TrainingRuntime")
    assert trainjob["spec"]["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "TrainingRuntime",
        "name": runtime["metadata"]["name"],
    }
    (job,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    pod = job["template"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    trainer = trainjob["spec"]["trainer"]
    assert trainer["image"] == container["image"] and trainer["args"] == container["args"] == ["train"]
    assert trainer["numNodes"] >= 1 and trainjob["spec"]["activeDeadlineSeconds"] > 0
    resources = trainer["resourcesPerNode"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"]
    assert "memory" in resources["limits"]
    env = {e["name"]: e for e in trainer["env"]}
    assert not [name for name in env if name.startswith("PET_")]  # the torch policy's own: Trainer rejects them
    assert {k[len("SEQ2SEQ_") :].lower() for k in env if k.startswith("SEQ2SEQ_")} - {"params"} <= set(
        Seq2SeqParams.model_fields
    )
    assert env["SEQ2SEQ_PARAMS"]["value"].startswith(mounts_of(container, "params"))
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "seq2seq-credentials"
    assert trainjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"]
    # what Trainer's webhook checks in runtimePatches beyond the CRD schema
    for patch in trainjob["spec"]["runtimePatches"]:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9][-A-Za-z0-9_./]*", patch["manager"])
        for patched in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
            assert patched["name"] == job["name"]
            patched_pod = patched["template"]["spec"]["template"]["spec"]
            assert {v["name"] for v in patched_pod.get("volumes", [])} <= {v["name"] for v in pod["volumes"]}
            assert not [c for c in patched_pod.get("containers", []) if c["name"] == "node" and c.get("env")]


def test_jobset_names_its_own_node_zero_as_the_master() -> None:
    from job.platforms.topology import detect_topology

    jobset = manifest("jobset.yaml", "JobSet")
    name, spec = jobset["metadata"]["name"], jobset["spec"]
    (job,) = spec["replicatedJobs"]
    env = {
        e["name"]: e["value"]
        for e in job["template"]["spec"]["template"]["spec"]["containers"][0]["env"]
        if "value" in e
    }
    assert spec["network"]["enableDNSHostnames"] is True
    # JobSet pod host names: <jobset>-<replicated job>-<job index>-<pod index>, in the subdomain <jobset>
    assert env["MASTER_ADDR"] == f"{name}-{job['name']}-0-0.{spec['network'].get('subdomain', name)}"
    assert env["NNODES"] == str(job["template"]["spec"]["completions"]) == str(job["template"]["spec"]["parallelism"])
    topology = detect_topology({**env, "JOB_COMPLETION_INDEX": "1"})  # what Kubernetes sets in pod 1
    assert (topology.nnodes, topology.node_rank, topology.master_addr, topology.master_port) == (
        2,
        1,
        env["MASTER_ADDR"],
        29500,
    )


def test_katib_trials_run_this_image_with_the_trial_values_as_job_parameters() -> None:
    experiment = manifest("katib-experiment.yaml", "Experiment")["spec"]
    template = experiment["trialTemplate"]
    text = json.dumps(template["trialSpec"])
    declared = {p["name"]: p["reference"] for p in template["trialParameters"]}
    assert set(re.findall(r"\$\{trialParameters\.(\w+)\}", text)) == set(declared)
    searched = {p["name"] for p in experiment["parameters"]}
    assert {r for r in declared.values() if not r.startswith("${trialSpec.")} == searched
    assert searched <= set(Seq2SeqParams.model_fields)
    # the objective is the job's default metric_for_best_model as an evaluation metric, minimized for a loss
    best = Seq2SeqParams.model_fields["metric_for_best_model"].default
    assert experiment["objective"]["objectiveMetricName"] == f"eval_{best}"
    assert experiment["objective"]["type"] == ("minimize" if best == "loss" else "maximize")
    assert experiment["metricsCollectorSpec"]["collector"]["kind"] == "StdOut"
    # once Katib has filled in a trial's values, its SEQ2SEQ_* variables are valid job parameters
    sample = {"learningRate": "0.0001", "batchSize": "16", "warmupRatio": "0.05", "trialName": "seq2seq-tune-x7"}
    trial = json.loads(re.sub(r"\$\{trialParameters\.(\w+)\}", lambda m: sample[m.group(1)], text))
    (container,) = trial["spec"]["template"]["spec"]["containers"]
    assert container["name"] == template["primaryContainerName"]
    values = {
        e["name"][len("SEQ2SEQ_") :].lower(): e["value"]
        for e in container["env"]
        if e["name"].startswith("SEQ2SEQ_") and e["name"] != "SEQ2SEQ_PARAMS"
    }
    params = Seq2SeqParams(data_path="/data", **values)
    assert (params.lr, params.batch_size, params.project_name) == (1e-4, 16, "/out/katib/seq2seq-tune-x7")
    # Katib's collector runs the command under sh -c: it must be the image's ENTRYPOINT (tini -s: not PID 1 there)
    entrypoint = re.search(r"^ENTRYPOINT (\[.*\])$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert [arg for arg in container["command"] if arg != "-s"] == json.loads(entrypoint.group(1))


def test_pytorchjob_is_marked_as_the_training_operator_v1_manifest() -> None:
    assert "Training Operator v1" in (REPO / "k8s" / "pytorchjob.yaml").read_text().split("apiVersion:")[0]
    assert "Training Operator v1" in (REPO / "k8s" / "README.md").read_text()


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
