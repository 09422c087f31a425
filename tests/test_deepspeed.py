"""DeepSpeed: every bundled config resolved by the transformers integration against our params, clear errors
for combinations that cannot work, and real ZeRO-2 / ZeRO-3 trainings with two CPU processes (gloo)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import write_task
from launch_helpers import TINY_RUN, run_launch, step_losses, without_dropout

from job import manifest
from job.errors import UserError
from job.params import Seq2SeqParams
from job.preflight import preflight
from job.training.deepspeed import DEEPSPEED_CONFIG_DIR, DEEPSPEED_PRESETS

OFFLINE = {"HF_HUB_OFFLINE": "1"}  # the default model comes from the cache: preflight does not ask the Hub


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.fixture
def clean_deepspeed_state():
    """TrainingArguments(deepspeed=…) registers its config globally (from_pretrained would see ZeRO-3 in later
    tests); drop it, and any environment the plugin set, afterwards."""
    environ = dict(os.environ)
    yield
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    os.environ.clear()
    os.environ.update(environ)


def test_bundled_configs_are_exactly_the_presets() -> None:
    assert sorted(p.stem for p in DEEPSPEED_CONFIG_DIR.glob("*.json")) == sorted(DEEPSPEED_PRESETS)


@pytest.mark.parametrize("name", DEEPSPEED_PRESETS)
def test_bundled_config_is_filled_in_from_our_params(name, tiny_t5_dir, clean_deepspeed_state) -> None:
    from transformers import AutoModelForSeq2SeqLM
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    from job.training.args import build_training_args
    from job.training.deepspeed import load_deepspeed_config

    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir)  # before any DeepSpeed config exists
    values = dict(
        data_path="data.csv", batch_size=4, gradient_accumulation=3, lr=2e-4, weight_decay=0.01, max_grad_norm=0.5
    )
    raw = json.loads((DEEPSPEED_CONFIG_DIR / f"{name}.json").read_text())
    assert raw["train_micro_batch_size_per_gpu"] == raw["gradient_accumulation_steps"] == "auto"
    assert raw["gradient_clipping"] == raw["bf16"]["enabled"] == raw["fp16"]["enabled"] == "auto"

    args = build_training_args(Seq2SeqParams(**values, deepspeed=name), train_rows=96, has_eval=False)
    hf_config = args.hf_deepspeed_config  # transformers' HfTrainerDeepSpeedConfig, as the Trainer gets it
    hf_config.trainer_config_finalize(args, model, num_training_steps=8)  # what Trainer does once it has the model
    config = hf_config.config
    assert "auto" not in json.dumps(config)
    assert config["train_micro_batch_size_per_gpu"] == 4
    assert config["gradient_accumulation_steps"] == 3
    assert "train_batch_size" not in config  # DeepSpeed derives it: 4 × 3 × world size
    assert config["gradient_clipping"] == 0.5
    assert config["bf16"]["enabled"] is False and config["fp16"]["enabled"] is False
    assert hf_config.is_zero3() is name.startswith("zero3")
    zero = config["zero_optimization"]
    assert zero["reduce_bucket_size"] == model.config.d_model**2  # from the model's hidden size
    if name.startswith("zero3"):
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True  # a from_pretrained-able final model
        assert zero["stage3_param_persistence_threshold"] == 10 * model.config.d_model
    if "optimizer" in config:  # zero3_offload: DeepSpeed's CPU AdamW, with our values
        assert config["optimizer"]["params"]["lr"] == 2e-4
        assert config["optimizer"]["params"]["weight_decay"] == 0.01
    else:  # the Trainer builds the optimizer and schedule from optimizer=/scheduler=
        assert "scheduler" not in config

    # precision comes from mixed_precision too (DeepSpeed with bf16 needs CUDA, so resolve it on its own here)
    bf16_args = build_training_args(Seq2SeqParams(**values, mixed_precision="bf16"), train_rows=96, has_eval=False)
    bf16 = HfTrainerDeepSpeedConfig(load_deepspeed_config(name))
    bf16.trainer_config_process(bf16_args)
    assert bf16.config["bf16"]["enabled"] is True and bf16.config["fp16"]["enabled"] is False


def _user_config(tmp_path: Path, data: dict | str) -> str:
    path = tmp_path / "ds.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"deepspeed": "zero4"}, "deepspeed=zero4 is neither zero2, zero3, zero3_offload nor a path"),
        ({"deepspeed": "/no/such/ds.json"}, "deepspeed config /no/such/ds.json cannot be read"),
        ({"deepspeed": "zero2", "peft": True, "quantization": "int8"}, "deepspeed does not train int8-quantized"),
        ({"deepspeed": "zero3", "peft": True, "quantization": "int4"}, "deepspeed does not train int4-quantized"),
        ({"deepspeed": "zero3_offload", "optimizer": "adafactor"}, "brings its own optimizer (AdamW)"),
        pytest.param(
            {"deepspeed": "zero2", "mixed_precision": "bf16"},
            "deepspeed with mixed_precision=bf16 needs a CUDA GPU",
            marks=pytest.mark.skipif(_cuda(), reason="CPU only"),
        ),
    ],
)
def test_impossible_combinations_are_user_errors(kwargs, message) -> None:
    with pytest.raises(UserError, match="invalid parameters: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        preflight({"data_path": "data.csv", **kwargs}, env=OFFLINE)


def test_a_users_config_must_agree_with_the_params(tmp_path) -> None:
    with pytest.raises(UserError, match="is not valid JSON"):
        preflight({"data_path": "data.csv", "deepspeed": _user_config(tmp_path, "{stage: 2")}, env=OFFLINE)
    mismatched = {
        "train_micro_batch_size_per_gpu": 8,
        "gradient_clipping": "auto",
        "bf16": {"enabled": True},
        "zero_optimization": {"stage": 3},
    }
    with pytest.raises(UserError) as caught:
        preflight(
            {"data_path": "data.csv", "batch_size": 2, "deepspeed": _user_config(tmp_path, mismatched)}, env=OFFLINE
        )
    text = str(caught.value)
    assert "sets train_micro_batch_size_per_gpu=8 but batch_size=2" in text
    assert "sets bf16.enabled=True but mixed_precision=None" in text
    assert "stage3_gather_16bit_weights_on_model_save=true" in text
    # LoRA without quantization on a ZeRO-3-sharded model is fine, and so is a config that agrees
    agreeing = {"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 2}}
    assert preflight(
        {"data_path": "data.csv", "batch_size": 2, "deepspeed": _user_config(tmp_path, agreeing)}, env=OFFLINE
    )
    assert Seq2SeqParams(data_path="data.csv", deepspeed="zero3", peft=True, quantization="none").quantized is False


def test_an_explicit_train_batch_size_must_be_the_effective_batch(tmp_path, clean_deepspeed_state) -> None:
    from job.training.args import build_training_args

    config = {"train_batch_size": 12, "train_micro_batch_size_per_gpu": "auto", "zero_optimization": {"stage": 2}}
    params = Seq2SeqParams(data_path="data.csv", batch_size=4, deepspeed=_user_config(tmp_path, config))
    with pytest.raises(
        UserError,
        match=r"sets train_batch_size=12 but batch_size × gradient_accumulation × "
        r"processes = 4; set it to \"auto\"",
    ):
        build_training_args(params, train_rows=96, has_eval=False)
    params = Seq2SeqParams(data_path="data.csv", batch_size=12, deepspeed=_user_config(tmp_path, config))
    args = build_training_args(params, train_rows=96, has_eval=False)
    assert "train_batch_size" not in args.hf_deepspeed_config.config  # left for DeepSpeed to derive


def test_deepspeed_without_the_launcher_says_how_to_start_it(tmp_path) -> None:
    from job.pipeline import train

    with pytest.raises(UserError, match=r"deepspeed=zero2 needs a distributed launcher: .*python -m job.launch"):
        train(Seq2SeqParams(data_path=str(tmp_path / "data.csv"), deepspeed="zero2", project_name=str(tmp_path)))


def test_zero2_and_zero3_train_two_cpu_processes_to_the_same_model(tiny_t5_dir, tmp_path) -> None:
    """Real DeepSpeed on CPU (DS_ACCELERATOR=cpu, gloo): the first run JIT-builds its shared-memory op."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    data = write_task(tmp_path / "data", kind="keywords", train_rows=64, valid_rows=16)
    model = without_dropout(tiny_t5_dir, tmp_path / "t5")
    runs = {}
    for name in ("zero2", "zero3"):
        out = tmp_path / name
        job = run_launch(
            "train",
            "--data-path",
            str(data),
            "--model",
            str(model),
            *TINY_RUN,
            "--batch-size",
            "8",
            "--num-processes",
            "2",
            "--deepspeed",
            name,
            "--project-name",
            str(out),
            log=tmp_path / f"{name}.log",
            timeout=420,
        )
        assert job.rc == 0, job.tail()
        assert f"world size 2 on CPU (gloo), DeepSpeed {name}" in job.text
        assert "DeepSpeed on CPU: 2 processes, backend gloo" in job.text
        assert manifest.verify(out, checksums=True)
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["distributed"]["deepspeed"] == {"config": name, "zero_stage": int(name[-1])}
        assert metrics["distributed"]["world_size"] == 2 and metrics["effective_batch_size"] == 16
        runs[name] = (out, step_losses(out), metrics)

    (out2, losses2, metrics2), (out3, losses3, metrics3) = runs["zero2"], runs["zero3"]
    assert len(losses2) == len(losses3) == 8  # 64 rows / (8 × 2 processes) × 2 epochs: the data was sharded
    assert losses2[-1] < losses2[0] - 0.5
    assert losses3 == pytest.approx(losses2, rel=1e-3)  # sharding parameters too changes nothing else
    assert metrics3["eval_loss"] == pytest.approx(metrics2["eval_loss"], rel=1e-3)
    # every rank's ZeRO shard is in the checkpoint before rank 0 marks it complete
    checkpoint = max((out3 / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    shards = [f for f in manifest.read_manifest(checkpoint)["files"] if f.startswith("global_step")]
    assert any("rank_0" in f for f in shards) and any("rank_1" in f for f in shards), shards

    # ZeRO-3's final save gathers the shards into one ordinary model: from_pretrained loads it, nothing missing
    loaded, info = AutoModelForSeq2SeqLM.from_pretrained(out3, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    reference = AutoModelForSeq2SeqLM.from_pretrained(out2).state_dict()
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, reference[key], rtol=1e-3, atol=1e-4, msg=key)
    tokenizer = AutoTokenizer.from_pretrained(out3)
    generated = loaded.generate(**tokenizer(["red cat sat"], return_tensors="pt"), max_new_tokens=4)
    assert generated.shape[0] == 1


def test_zero3_offload_trains_with_deepspeeds_cpu_adam_and_saves_a_loadable_model(tiny_t5_dir, tmp_path) -> None:
    """Parameters and optimizer states offloaded to host memory; DeepSpeed's own (JIT-built) CPU AdamW steps."""
    from transformers import AutoModelForSeq2SeqLM

    data = write_task(tmp_path / "data", kind="keywords", train_rows=64, valid_rows=16)
    out = tmp_path / "offload"
    job = run_launch(
        "train",
        "--data-path",
        str(data),
        "--model",
        str(tiny_t5_dir),
        *TINY_RUN,
        "--batch-size",
        "8",
        "--num-processes",
        "2",
        "--deepspeed",
        "zero3_offload",
        "--project-name",
        str(out),
        log=tmp_path / "offload.log",
        timeout=420,
    )
    assert job.rc == 0, job.tail()
    assert "DeepSpeed zero3_offload" in job.text
    assert manifest.verify(out, checksums=True)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["distributed"]["deepspeed"] == {"config": "zero3_offload", "zero_stage": 3}
    losses = step_losses(out)
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.5
    loaded, info = AutoModelForSeq2SeqLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert loaded.num_parameters() == AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir).num_parameters()


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["zero2", "zero3"])
def test_zero_with_bf16_on_gpus(name, tiny_t5_dir, tmp_path) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from transformers import AutoModelForSeq2SeqLM

    data = write_task(tmp_path / "data", kind="keywords", train_rows=256, valid_rows=16)
    out = tmp_path / "out"
    nproc = min(2, torch.cuda.device_count())
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", ",".join(str(i) for i in range(nproc)))
    env = {"DS_ACCELERATOR": "cuda", "CUDA_VISIBLE_DEVICES": gpus}
    job = run_launch(
        "train",
        "--data-path",
        str(data),
        "--model",
        str(tiny_t5_dir),
        *TINY_RUN,
        "--batch-size",
        "16",
        "--mixed-precision",
        "bf16",
        "--deepspeed",
        name,
        "--num-processes",
        str(nproc),
        "--project-name",
        str(out),
        log=tmp_path / "job.log",
        env=env,
        timeout=600,
    )
    assert job.rc == 0, job.tail()
    metrics = json.loads((out / "metrics.json").read_text())
    losses = step_losses(out)
    assert losses[-1] < losses[0] and metrics["peak_gpu_memory_mb"] > 0
    loaded = AutoModelForSeq2SeqLM.from_pretrained(out)
    assert next(loaded.parameters()).dtype in (torch.bfloat16, torch.float32)
    print(
        f"{name} bf16 on {nproc} GPU(s): {metrics['train_samples_per_second']} samples/s, "
        f"peak GPU memory {metrics['peak_gpu_memory_mb']} MB, loss {losses[0]:.3f} → {losses[-1]:.3f}"
    )
