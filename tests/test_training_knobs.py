"""The knobs people reach for (max_steps, warmup_steps, label_smoothing, gradient_checkpointing, torch_compile,
dataloader workers, the fused AdamW on CUDA) and evaluation that does not dominate the run."""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import pytest
import torch
from launch_helpers import without_dropout
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq

from job.params import Seq2SeqParams
from job.pipeline import train
from job.training import eval_batching
from job.training.args import build_training_args, dataloader_workers, default_optimizer
from job.training.loss import token_mean_loss

TASK = dict(
    valid_split="validation[:16]",
    max_samples=64,
    batch_size=8,
    epochs=1,
    max_seq_length=32,
    max_target_length=8,
    lr=3e-3,
    warmup_ratio=0.0,
    early_stopping_patience=0,
    logging_steps=1,
    load_best_model_at_end=False,
    save_strategy="no",
)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def step_losses(out: Path) -> list[float]:
    """Per-step training losses, exact, from the last checkpoint's trainer_state.json."""
    (checkpoint,) = (out / "checkpoints").glob("checkpoint-*")
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    return [e["loss"] for e in history if "loss" in e]


def test_arguments_follow_the_params() -> None:
    params = Seq2SeqParams(
        data_path="d.csv",
        max_steps=7,
        warmup_steps=3,
        label_smoothing=0.1,
        torch_compile=True,
        dataloader_num_workers=3,
        optimizer="adafactor",
    )
    args = build_training_args(params, train_rows=100, has_eval=False, eval_batch_size=24, num_workers=3)
    assert (args.max_steps, args.warmup_steps, args.label_smoothing_factor) == (7, 3, 0.1)
    assert args.torch_compile and args.dataloader_num_workers == 3 and args.optim == "adafactor"
    assert args.per_device_eval_batch_size == 24
    defaults = build_training_args(Seq2SeqParams(data_path="d.csv"), train_rows=100, has_eval=False)
    assert defaults.max_steps == -1 and defaults.warmup_steps == 0.1 and not defaults.torch_compile
    assert defaults.optim == "adamw_torch_fused"  # CPU and CUDA both have torch's fused AdamW kernel
    assert default_optimizer("cuda") == default_optimizer("cpu") == "adamw_torch_fused"
    assert default_optimizer("no-such-device") == "adamw_torch"


def test_dataloader_workers_default_to_none_on_cpu_and_two_per_gpu_process_with_cpus_to_spare() -> None:
    params = Seq2SeqParams(data_path="d.csv")
    assert dataloader_workers(params, cuda=False, cpus_per_process=32) == 0
    assert dataloader_workers(params, cuda=True, cpus_per_process=8) == 2
    assert dataloader_workers(params, cuda=True, cpus_per_process=2) == 0
    assert (
        dataloader_workers(Seq2SeqParams(data_path="d", dataloader_num_workers=5), cuda=False, cpus_per_process=1) == 5
    )


def test_max_steps_stops_training_there(tiny_t5_dir, keywords_task_dir, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO)
    metrics = train(
        Seq2SeqParams(
            data_path=str(keywords_task_dir),
            model=str(tiny_t5_dir),
            project_name=str(tmp_path / "run"),
            **{**TASK, "epochs": 5},
            max_steps=3,
        )
    )
    assert metrics["global_step"] == 3  # 64 rows / 8 = 8 steps per epoch, 40 for 5 epochs
    assert "max_steps=3: training stops there" in caplog.text


def test_label_smoothing_is_the_trainers_formula_over_the_steps_tokens() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11)
    labels = torch.randint(0, 11, (3, 5))
    labels[0, 3:] = -100
    eps, tokens = 0.1, int(labels.ne(-100).sum())
    logp = logits.log_softmax(-1)
    kept = labels.ne(-100)
    nll = -logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)[kept]
    smooth = -logp.mean(-1)[kept]  # transformers' LabelSmoother: the mean over the vocabulary
    expected = ((1 - eps) * nll + eps * smooth).sum() / tokens
    got = token_mean_loss({"logits": logits}, labels, tokens, label_smoothing=eps)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert token_mean_loss({"logits": logits}, labels, tokens).item() == pytest.approx((nll.sum() / tokens).item())


def test_gradient_checkpointing_gives_the_same_steps(tiny_t5_dir, keywords_task_dir, tmp_path, caplog) -> None:
    """Recomputing activations changes memory, not the result: the same loss at every step (dropout off)."""
    caplog.set_level(logging.INFO)
    model = without_dropout(tiny_t5_dir, tmp_path / "t5")
    runs = {}
    for checkpointing in (False, True):
        caplog.clear()
        out = tmp_path / f"gc-{checkpointing}"
        params = dict(TASK, save_strategy="epoch", gradient_checkpointing=checkpointing)
        train(Seq2SeqParams(data_path=str(keywords_task_dir), model=str(model), project_name=str(out), **params))
        runs[checkpointing] = step_losses(out)
        assert ("Gradient checkpointing on" in caplog.text) is checkpointing
    assert len(runs[True]) == len(runs[False]) == 8
    assert runs[True] == pytest.approx(runs[False], abs=1e-5)


def test_quantized_lora_checkpoints_by_default_and_can_turn_it_off(tiny_bart_dir) -> None:
    from job.modeling import load_model

    tokenizer = AutoTokenizer.from_pretrained(tiny_bart_dir)
    common = dict(data_path="d.csv", peft=True, quantization="int8", target_modules="q_proj,v_proj")
    on = load_model(str(tiny_bart_dir), Seq2SeqParams(**common), tokenizer)
    off = load_model(str(tiny_bart_dir), Seq2SeqParams(**common, gradient_checkpointing=False), tokenizer)
    assert on.base_model.model.is_gradient_checkpointing and not off.base_model.model.is_gradient_checkpointing
    plain = load_model(str(tiny_bart_dir), Seq2SeqParams(data_path="d.csv"), tokenizer)
    assert not plain.is_gradient_checkpointing


# --------------------------------------------------------------------------------------------- evaluation
def test_eval_batch_is_sized_by_tokens_on_cpu_and_by_memory_on_gpu(tiny_t5_dir) -> None:
    size, why = eval_batching.auto_eval_batch_size(longest_input=100, generated_tokens=28, num_beams=1, rows=1000)
    assert size == eval_batching.CPU_TOKEN_BUDGET // 128 == 128 and "tokens per batch" in why
    assert eval_batching.auto_eval_batch_size(longest_input=100, generated_tokens=28, num_beams=4, rows=9)[0] == 9
    assert eval_batching.auto_eval_batch_size(longest_input=4000, generated_tokens=100, num_beams=8, rows=9)[0] == 1
    config = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir).config
    per_row = eval_batching.row_bytes(config, input_tokens=512, generated_tokens=128, num_beams=1, dtype_bytes=2)
    free = 100 * per_row * 2 + eval_batching.ADAM_BYTES_PER_PARAMETER * 1000
    size, why = eval_batching.auto_eval_batch_size(
        longest_input=512,
        generated_tokens=128,
        num_beams=1,
        rows=10_000,
        config=config,
        free_bytes=free,
        trainable_parameters=1000,
        dtype_bytes=2,
    )
    assert size == 100 and "GiB free after the optimizer" in why


def test_eval_subset_is_fixed_random_and_keeps_the_length_order() -> None:
    import datasets

    valid = datasets.Dataset.from_dict({"length": list(range(100, 0, -1))})
    first = eval_batching.eval_subset(valid, 10, seed=1)
    assert first["length"] == eval_batching.eval_subset(valid, 10, seed=1)["length"]
    assert first["length"] == sorted(first["length"], reverse=True) and len(set(first["length"])) == 10
    assert eval_batching.eval_subset(valid, 10, seed=2)["length"] != first["length"]
    assert eval_batching.eval_subset(valid, 500, seed=1) is valid and eval_batching.eval_subset(None, 5, seed=1) is None


def test_eval_max_samples_evaluates_a_subset_during_training_and_everything_at_the_end(
    tiny_t5_dir, keywords_task_dir, tmp_path, monkeypatch, caplog
) -> None:
    from job.training.trainer import JobTrainer

    caplog.set_level(logging.INFO)
    seen: list[int] = []
    original = JobTrainer.evaluation_loop

    def counting(self, *args, **kwargs):
        output = original(self, *args, **kwargs)
        seen.append(output.num_samples)
        return output

    monkeypatch.setattr(JobTrainer, "evaluation_loop", counting)
    params = dict(TASK, valid_split="validation", epochs=2, eval_max_samples=8)
    metrics = train(
        Seq2SeqParams(
            data_path=str(keywords_task_dir), model=str(tiny_t5_dir), project_name=str(tmp_path / "run"), **params
        )
    )
    assert seen == [8, 8, 40]  # each epoch on the fixed 8, the final evaluation on all 40 validation rows
    assert len(metrics["evaluations"]) == 2 and "a fixed random 8 of the 40 validation rows" in caplog.text
    assert "Evaluation batch size 40 per device" in caplog.text  # every row in one batch on CPU


def test_generation_stops_when_every_row_has_finished(tiny_t5_dir) -> None:
    """transformers' generate already stops a batch once every row has produced eos; ensure_eos makes sure the
    generation config has one. A model biased to say eos at once generates 1 token, not max_new_tokens."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_t5_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir).eval()
    model.generation_config.eos_token_id = None
    eval_batching.ensure_eos(model, tokenizer)
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    eos = torch.zeros(len(tokenizer))
    eos[tokenizer.eos_token_id] = 1e4  # every row's most likely next token is eos
    model.lm_head.register_forward_hook(lambda module, args, logits: logits + eos)
    with torch.no_grad():
        inputs = tokenizer(["red cat sat", "the blue dog ran near the river"], return_tensors="pt", padding=True)
        out = model.generate(**inputs, max_new_tokens=50, min_new_tokens=0, do_sample=False)
    assert out.shape[1] == 2  # the decoder start token and eos: the batch stopped at the first step


@pytest.mark.parametrize(
    ("fixture", "beams", "chunk_tokens"),
    [("tiny_t5_dir", 1, None), ("tiny_bart_dir", 1, None), ("tiny_bart_dir", 2, None), ("tiny_t5_dir", 1, 16)],
)
def test_evaluation_encodes_each_batch_once_with_the_same_results(
    fixture, beams, chunk_tokens, request, keywords_task_dir, monkeypatch
) -> None:
    """Seq2SeqTrainer runs the encoder in generate and again for the loss; ours once, with identical figures.

    chunk_tokens: the CPU encoder chunks made tiny, so every batch is encoded in several chunks of rows, each
    at its own width.
    """
    from job.training import eval_batching

    if chunk_tokens:
        monkeypatch.setattr(eval_batching, "CPU_ENCODER_CHUNK_TOKENS", chunk_tokens)
    from job.data import load_data
    from job.preprocess import tokenize_data
    from job.training.build import build_trainer

    folder = request.getfixturevalue(fixture)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    data = load_data(data_path=str(keywords_task_dir), valid_split="validation")
    tokens = tokenize_data(data, tokenizer, max_seq_length=32, max_target_length=8)
    params = Seq2SeqParams(data_path="d", eval_batch_size=8, num_beams=beams, max_target_length=8)

    def evaluate(share: bool) -> tuple[dict, int]:
        model = AutoModelForSeq2SeqLM.from_pretrained(folder)
        trainer = build_trainer(params=params, model=model, tokenizer=tokenizer, data=tokens)
        if not share:
            trainer._shared_encoder = lambda *args: None
        calls = []
        model.get_encoder().register_forward_hook(lambda *args: calls.append(1))
        return trainer.evaluate(), len(calls)

    ours, ours_calls = evaluate(share=True)
    plain, plain_calls = evaluate(share=False)
    # 40 rows in batches of 8; beam search (which expands the encoder output in place) keeps the plain path
    if chunk_tokens:
        assert plain_calls == 10 and ours_calls > 10, ours_calls  # the chunks: several per batch
    else:
        assert (ours_calls, plain_calls) == ((5, 10) if beams == 1 else (10, 10))
    for key in ("eval_loss", "eval_rouge1", "eval_rougeL", "eval_gen_len"):
        assert ours[key] == pytest.approx(plain[key], abs=1e-5), key


def test_gradient_checkpointing_flag_is_on_off_or_unset() -> None:
    from job.cli import build_parser

    def parsed(*flags: str) -> dict:
        args = build_parser().parse_args(["train", "--data-path", "d.csv", *flags])
        return {k: v for k, v in vars(args).items() if k == "gradient_checkpointing"}

    assert parsed("--gradient-checkpointing") == {"gradient_checkpointing": True}
    assert parsed("--no-gradient-checkpointing") == {"gradient_checkpointing": False}
    assert parsed() == {}  # unset: on for 8/4-bit LoRA, off otherwise


def test_cpu_encoder_chunks_keep_rows_times_width_within_the_budget() -> None:
    from job.training.eval_batching import CPU_ENCODER_CHUNK_TOKENS, encoder_chunks

    lengths = [200] * 30 + [100] * 50 + [10] * 100  # an evaluation batch sorted longest-first
    chunks = encoder_chunks("cpu", lengths)
    assert chunks[0][0] == 0 and chunks[-1][1] == len(lengths)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(chunks))  # contiguous, every row once
    for start, end in chunks:
        assert (end - start) * max(lengths[start:end]) <= CPU_ENCODER_CHUNK_TOKENS
    # 20 rows of 200; 10 of 200 with 10 of 100 (20 × 200); 40 of 100; the 100 short ones together
    assert chunks == [(0, 20), (20, 40), (40, 80), (80, 180)]
    assert encoder_chunks("cpu", [5000, 3]) == [(0, 1), (1, 2)]  # a row longer than the budget is its own chunk
    assert encoder_chunks("cuda", lengths) == [(0, len(lengths))]  # a GPU takes the batch whole


def test_eval_loss_is_the_token_mean_over_the_split_for_any_batch_size(tiny_t5_dir, keywords_task_dir) -> None:
    """Per-batch means weighted by rows moved with the batch size; the token mean over the split does not."""
    import torch.nn.functional as F

    from job.data import load_data
    from job.preprocess import tokenize_data
    from job.training.build import build_trainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_t5_dir)
    data = load_data(data_path=str(keywords_task_dir), valid_split="validation")
    tokens = tokenize_data(data, tokenizer, max_seq_length=32, max_target_length=8)
    losses = {}
    for batch in (3, 40):
        for loss_only in (False, True):  # with generation (the default), and the Trainer's loss-only path
            params = Seq2SeqParams(data_path="d", eval_batch_size=batch, max_target_length=8)
            model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir)
            trainer = build_trainer(params=params, model=model, tokenizer=tokenizer, data=tokens)
            trainer.args.prediction_loss_only = loss_only
            losses[batch, loss_only] = trainer.evaluate()["eval_loss"]
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir).eval()
    collate = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)
    rows = [{k: r[k] for k in ("input_ids", "attention_mask", "labels")} for r in tokens.valid]
    total = count = 0.0
    with torch.no_grad():
        for row in rows:  # one row at a time: no padding anywhere
            batch = collate([row])
            logits = model(**batch).logits
            total += F.cross_entropy(logits[0], batch["labels"][0], ignore_index=-100, reduction="sum").item()
            count += int(batch["labels"].ne(-100).sum())
    for key, loss in losses.items():
        assert loss == pytest.approx(total / count, rel=1e-5), (key, losses)
