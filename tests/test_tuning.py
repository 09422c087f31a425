"""Hyperparameter tuning hooks (job.tuning) read back by each platform's own rules from a real short training run:
Katib's StdOut collector filter (k8s/katib-experiment.yaml), SageMaker's metric_definitions regexes
(examples/sagemaker_launch.py), and the Vertex AI metric file next to the one Google's cloudml-hypertune writes."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from conftest import write_task
from trainer_helpers import tiny_trainer
from transformers import TrainerCallback

from job import tuning
from job.cli import build_parser
from job.params import Seq2SeqParams
from job.tuning import HypertuneFile, Objective, TuningReporter, objective_line, objective_summary

REPO = Path(__file__).resolve().parents[1]


def load_module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Evaluations(TrainerCallback):
    """What the Trainer evaluated: (step, eval_loss), the ground truth the readers must find."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, float]] = []

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.seen.append((state.global_step, kwargs["metrics"]["eval_loss"]))


class Lines(logging.Handler):
    """Every log line of the run, formatted as the job prints them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def tuned(tiny_t5_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One real run (3 epochs, the best checkpoint loaded at the end) with the objective reported as on Vertex AI."""
    tmp = tmp_path_factory.mktemp("tuning_run")
    data = write_task(tmp / "data", kind="keywords", train_rows=64, valid_rows=16)
    env = {tuning.METRIC_FILE_ENV: str(tmp / "hypertune" / "output.metrics"), tuning.TRIAL_ID_ENV: "7"}
    reporter = TuningReporter.from_env(env, metric_for_best_model="loss")
    evaluations = Evaluations()
    lines = Lines()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(lines)
    root.setLevel(logging.INFO)
    try:
        trainer = tiny_trainer(
            model_dir=tiny_t5_dir,
            data_dir=data,
            out_dir=tmp / "run",
            epochs=3,
            save_strategy="epoch",
            load_best_model_at_end=True,
            metric_for_best_model="loss",
            callbacks=[evaluations, tuning.TuningCallback(reporter)],
        )
        result = trainer.train()
        final = {**result.metrics, **trainer.evaluate()}  # as job.train: the final model evaluated once more
        summary = reporter.final(final, step=trainer.state.global_step, epoch=trainer.state.epoch)
    finally:
        root.removeHandler(lines)
        root.setLevel(old_level)
    return SimpleNamespace(
        lines=lines.lines,
        evaluations=evaluations.seen,
        final=final,
        summary=summary,
        reporter=reporter,
        metric_file=Path(env[tuning.METRIC_FILE_ENV]),
    )


# ------------------------------------------------------------------------------------------------ real run
def test_one_objective_line_per_evaluation_and_the_final_model_last(tuned: SimpleNamespace) -> None:
    found = [re.search(r"objective: (\w+)=(\S+) epoch=([\d.]+) step=(\d+)$", line) for line in tuned.lines]
    objective = [(m[1], float(m[2]), int(m[4])) for m in found if m]
    # 3 epoch evaluations + the final one; reporter.final() did not repeat the final evaluation's line
    assert [(step, value) for _, value, step in objective] == tuned.evaluations and len(objective) == 4
    assert {name for name, _, _ in objective} == {"eval_loss"}
    assert objective[-1][1] == tuned.final["eval_loss"]
    assert tuned.summary == {"name": "eval_loss", "value": tuned.final["eval_loss"], "goal": "minimize"}
    # the best checkpoint was loaded: the final model's objective is the best one seen
    assert tuned.final["eval_loss"] == min(value for _, value, _ in objective)


def test_sagemaker_metric_definitions_read_the_objective_from_the_log(tuned: SimpleNamespace) -> None:
    example = load_module(REPO / "examples" / "sagemaker_launch.py")
    args = example.parse_args(["--image-uri", "i", "--role", "r", "--train", "s3://b/t", "--output", "s3://b/o"])
    (definition,) = example.estimator_kwargs(args)["metric_definitions"]
    assert definition["Name"] == "eval_loss" and len(definition["Regex"]) <= 500  # SageMaker's limit
    # SageMaker applies the regex to every line of the log (stdout and stderr), first group = the value
    values = [float(m.group(1)) for line in tuned.lines if (m := re.search(definition["Regex"], line))]
    assert values == [value for _, value in tuned.evaluations] and values[-1] == tuned.final["eval_loss"]
    assert any("eval_loss=" in line and "objective:" not in line for line in tuned.lines)  # other lines: ignored
    tuner = example.tuner_kwargs(example.parse_args([*_sm_args(), "--tune", "--objective-metric", "eval_rouge1"]))
    assert (tuner["objective_metric_name"], tuner["objective_type"]) == ("eval_rouge1", "Maximize")
    assert tuner["metric_definitions"] == example.metric_definitions("eval_rouge1")
    assert set(tuner["hyperparameter_ranges"]) <= set(Seq2SeqParams.model_fields)


def _sm_args() -> list[str]:
    return ["--image-uri", "i", "--role", "r", "--train", "s3://b/t", "--output", "s3://b/o"]


def test_katib_stdout_collector_filter_reads_the_objective_from_the_log(tuned: SimpleNamespace) -> None:
    experiment = yaml.safe_load((REPO / "k8s" / "katib-experiment.yaml").read_text())["spec"]
    name = experiment["objective"]["objectiveMetricName"]
    (metrics_format,) = experiment["metricsCollectorSpec"]["source"]["filter"]["metricsFormat"]
    # Katib's TEXT parser: lines that contain the metric's name, every (name, value) match of each filter
    values = [
        float(value)
        for line in tuned.lines
        if name in line
        for found, value, *_ in re.findall(metrics_format, line)
        if found == name
    ]
    assert values == [value for _, value in tuned.evaluations]
    strategy = {s["name"]: s["value"] for s in experiment["objective"]["metricStrategies"]}[name]
    assert (min if strategy == "min" else max)(values) == tuned.final["eval_loss"]  # what the trial records


def test_the_vertex_metric_file_is_what_cloudml_hypertune_writes(
    tuned: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hypertune  # Google's cloudml-hypertune, the library Vertex AI's documentation points trial code at

    ours = tuned.metric_file.read_text().splitlines()
    monkeypatch.setenv("CLOUD_ML_HP_METRIC_FILE", str(tmp_path / "theirs.metrics"))
    monkeypatch.setenv("CLOUD_ML_TRIAL_ID", "7")
    library = hypertune.HyperTune()
    for step, value in tuned.evaluations:
        library.report_hyperparameter_tuning_metric(
            hyperparameter_metric_tag="eval_loss", metric_value=value, global_step=step
        )
    theirs = (tmp_path / "theirs.metrics").read_text().splitlines()
    assert len(ours) == len(theirs) == 4

    def without_time(line: str) -> dict[str, Any]:
        entry = json.loads(line)
        assert isinstance(entry.pop("timestamp"), float)
        return entry

    assert [without_time(line) for line in ours] == [without_time(line) for line in theirs]
    assert [re.sub(r'"timestamp": [\d.e+]+', "", line) for line in ours] == [
        re.sub(r'"timestamp": [\d.e+]+', "", line) for line in theirs
    ]
    assert json.loads(ours[-1])["eval_loss"] == str(tuned.final["eval_loss"])


def test_the_vertex_tuning_example_trials_are_valid_job_runs() -> None:
    job = json.loads((REPO / "examples" / "vertex_hp_tuning.json").read_text())
    study = job["studySpec"]
    objective = Objective.for_run(Seq2SeqParams.model_fields["metric_for_best_model"].default)
    assert study["metrics"] == [{"metricId": objective.name, "goal": objective.goal.upper()}]
    assert study["measurementSelectionType"] == "LAST_MEASUREMENT"  # the final model's report is the last one
    assert job["maxTrialCount"] >= job["parallelTrialCount"] >= 1
    (pool,) = job["trialJobSpec"]["workerPoolSpecs"]
    container = pool["containerSpec"]
    assert pool["replicaCount"] == 1 and container["args"] == ["train"] and "command" not in container
    # Vertex appends each trial's values as --<parameterId>=<value> to the container's args
    sample = {"doubleValueSpec": lambda s: str(s["maxValue"]), "categoricalValueSpec": lambda s: s["values"][-1]}
    trial_args = [*container["args"]]
    for parameter in study["parameters"]:
        (kind,) = [k for k in parameter if k.endswith("ValueSpec")]
        trial_args.append(f"--{parameter['parameterId']}={sample[kind](parameter[kind])}")
    flags = {k: v for k, v in vars(build_parser().parse_args(trial_args)).items() if k in Seq2SeqParams.model_fields}
    env = {e["name"][len("SEQ2SEQ_") :].lower(): e["value"] for e in container["env"]}
    params = Seq2SeqParams(**{**env, **flags})
    assert (params.lr, params.batch_size, params.warmup_ratio) == (0.001, 32, 0.1)


# ------------------------------------------------------------------------------------------------ no training
def test_the_objective_follows_metric_for_best_model() -> None:
    assert Objective.for_run("loss") == Objective("eval_loss", greater_is_better=False)
    assert (
        Objective.for_run("rouge1").goal == "maximize" and Objective.for_run("x", name="eval_bleu").name == "eval_bleu"
    )
    assert Objective.for_run("loss", name="rougeL", greater_is_better=True) == Objective("eval_rougeL", True)
    assert objective_line("eval_loss", 1e-05, step=20, epoch=1.0) == "objective: eval_loss=1e-05 epoch=1 step=20"
    assert (
        objective_line("eval_rouge1", 41.25, step=7, epoch=0.33333)
        == "objective: eval_rouge1=41.25 epoch=0.3333 step=7"
    )
    assert objective_summary(Objective.for_run("loss"), {"eval_loss": float("nan")}) is None


def test_missing_or_unusable_objective_is_reported_as_such(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reporter = TuningReporter(Objective.for_run("loss"), hypertune=HypertuneFile(tmp_path / "m" / "out.metrics"))
    with caplog.at_level(logging.INFO, logger="job.tuning"):
        assert reporter.report({"eval_rouge1": 3.0}, step=1) is None  # another evaluation's metrics: nothing
        assert reporter.report({"eval_loss": float("inf")}, step=2) is None
        assert reporter.final({"train_loss": 0.5}, step=3) is None  # no validation split
    assert (
        "eval_loss=inf is not a finite number" in caplog.text
        and "not among the final metrics (train_loss)" in caplog.text
    )
    assert not (tmp_path / "m").exists() and reporter.reported == []
    # the file is written only where Vertex AI reads it
    assert HypertuneFile.from_env({}) is None and HypertuneFile.from_env({"AIP_MODEL_DIR": "gs://b/m"}) is None
    assert HypertuneFile.from_env({"CLOUD_ML_JOB_ID": "123"}) == HypertuneFile(tuning.DEFAULT_METRIC_FILE, "0")


def test_an_unwritable_metric_file_is_one_error_and_training_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_text("")
    reporter = TuningReporter(Objective.for_run("loss"), hypertune=HypertuneFile(tmp_path / "file" / "out.metrics"))
    with caplog.at_level(logging.INFO, logger="job.tuning"):
        assert reporter.report({"eval_loss": 0.5}, step=1) == 0.5
        assert reporter.report({"eval_loss": 0.4}, step=2) == 0.4
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    assert "objective: eval_loss=0.4 step=2" in caplog.text
