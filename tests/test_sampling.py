"""How training batches are formed: the default keeps random batches' learning curve and cuts their padding.

The quality test trains a task where the kind of example goes with its length (short inputs: name the animals;
long inputs: name the colours) three ways — random batches, the defaults, and the old ``group_by_length`` —
and compares the quality after each epoch. The other tests check the pieces: the cut points are optimal for
their cost model, micro-batches give the one batch's loss and gradient, and training steps are counted as
before.
"""

from __future__ import annotations

import csv
import itertools
import random
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL_WORDS
from launch_helpers import without_dropout
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq

from job.params import Seq2SeqParams
from job.pipeline import train
from job.training.loss import token_mean_loss
from job.training.microbatches import GroupCost, PaddingCount, plan_groups, split_batch

COLOURS, ANIMALS = {"red", "blue", "green"}, {"cat", "dog", "bird", "fish", "horse"}


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a busy 2-core machine the default makes tiny-model steps many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_length_correlated_task(folder: Path, *, train_rows: int, valid_rows: int, seed: int = 1) -> Path:
    """Half the rows are 4-7 words (target: their animal words), half 14-22 words (target: their colour words)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for split, rows in (("train", train_rows), ("validation", valid_rows)):
        with (folder / f"{split}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "target"])
            for _ in range(rows):
                long = rng.random() < 0.5
                words = [
                    rng.choice(TINY_MODEL_WORDS) for _ in range(rng.randint(14, 22) if long else rng.randint(4, 7))
                ]
                target = [w for w in words if w in (COLOURS if long else ANIMALS)] or ["none"]
                writer.writerow([" ".join(words), " ".join(target)])
    return folder


def test_defaults_learn_like_random_batches_where_length_grouping_does_not(tiny_t5_dir, tmp_path) -> None:
    """Same quality as random batches after every epoch; the old group_by_length fails the same check.

    Dropout is off, so the defaults (random rows per step, run as length-sorted micro-batches) compute the
    random batch's gradient up to rounding. Measured (800 rows, batch 16, lr 2e-3, 3 epochs; eval loss, the
    token mean / ROUGE-L after each epoch): random 0.591/64.7, 0.392/80.3, 0.345/83.5; defaults the same to the
    digits shown; group_by_length 0.735/55.6, 0.463/67.7, 0.435/75.3. Padding share: random 0.40, defaults 0.22,
    group_by_length 0.14. Length-grouped batches hold look-alike rows and come longest first within each run of
    50 batches, so every epoch ends with ~25 steps of short rows only.
    """
    data = write_length_correlated_task(tmp_path / "data", train_rows=800, valid_rows=80)
    model = without_dropout(tiny_t5_dir, tmp_path / "t5")
    common = dict(
        data_path=str(data),
        model=str(model),
        valid_split="validation",
        batch_size=16,
        lr=2e-3,
        epochs=3,
        warmup_ratio=0.0,
        max_seq_length=32,
        max_target_length=8,
        early_stopping_patience=0,
        load_best_model_at_end=False,
        save_strategy="no",
    )

    def curve(name: str, **how: object) -> tuple[list[tuple[float, float]], float]:
        metrics = train(Seq2SeqParams(**common, **how, project_name=str(tmp_path / name)))
        return [(e["eval_loss"], e["eval_rougeL"]) for e in metrics["evaluations"]], metrics["train_padding_share"]

    def same_quality(curve_a: list[tuple[float, float]], curve_b: list[tuple[float, float]]) -> bool:
        return len(curve_a) == len(curve_b) == 3 and all(
            abs(la - lb) <= 0.02 and abs(ra - rb) <= 3 for (la, ra), (lb, rb) in zip(curve_a, curve_b, strict=True)
        )

    random_batches, random_padding = curve("random", microbatch_by_length=False)
    defaults, default_padding = curve("defaults")
    grouped, _ = curve("grouped", group_by_length=True, microbatch_by_length=False)

    assert random_batches[-1][1] > 75, random_batches  # the task is learnt
    assert same_quality(defaults, random_batches), (defaults, random_batches)
    assert not same_quality(grouped, random_batches), (grouped, random_batches)
    assert all(g[0] > r[0] + 0.05 for g, r in zip(grouped, random_batches, strict=True)), (grouped, random_batches)
    assert default_padding < random_padding - 0.1, (default_padding, random_padding)  # the split did happen


# ------------------------------------------------------------------------------------------------ cut points
def _cost(groups: list[list[int]], a: list[int], b: list[int], cost: GroupCost) -> float:
    return sum(
        cost.overhead_tokens + max(len(g) * (max(a[i] for i in g) + max(b[i] for i in g)), cost.min_tokens)
        for g in groups
    )


@pytest.mark.parametrize("cost", [GroupCost(overhead_tokens=64), GroupCost(overhead_tokens=8, min_tokens=100)])
def test_cut_points_are_the_cheapest_contiguous_split_of_the_sorted_rows(cost) -> None:
    rng = random.Random(0)
    for _ in range(30):
        n = rng.randint(1, 9)
        a = [rng.choice([3, 5, 9, 40, 120, 200]) for _ in range(n)]
        b = [rng.randint(1, 30) for _ in range(n)]
        groups = plan_groups(a, b, cost)
        assert sorted(i for g in groups for i in g) == list(range(n))  # every row exactly once
        order = sorted(range(n), key=lambda i: (a[i], b[i]))
        best = min(
            _cost([order[i:j] for i, j in itertools.pairwise((0, *cuts, n))], a, b, cost)
            for k in range(n)
            for cuts in itertools.combinations(range(1, n), k)
        )
        assert _cost(groups, a, b, cost) == pytest.approx(best)


def test_rows_of_one_length_stay_one_batch_and_mixed_lengths_split() -> None:
    cost = GroupCost.for_device("cpu")
    assert plan_groups([20] * 16, [5] * 16, cost) == [list(range(16))]
    lengths = [8] * 12 + [200] * 4
    groups = plan_groups(lengths, [5] * 16, cost)
    assert [sorted(lengths[i] for i in g) for g in groups] == [[8] * 12, [200] * 4]
    assert GroupCost.for_device("cuda").min_tokens > 0  # a GPU is launch-bound on small groups


# ------------------------------------------------------------------------------------- the step's gradient
def _batch(tokenizer, model, texts: list[str], targets: list[str], pad_to_multiple_of: int | None = None) -> dict:
    collator = DataCollatorForSeq2Seq(
        tokenizer, model=model, label_pad_token_id=-100, pad_to_multiple_of=pad_to_multiple_of
    )
    rows = [
        {"input_ids": tokenizer(t)["input_ids"], "labels": tokenizer(text_target=y)["input_ids"]}
        for t, y in zip(texts, targets, strict=True)
    ]
    for row in rows:
        row["attention_mask"] = [1] * len(row["input_ids"])
    return dict(collator(rows))


def _loss_and_grads(model, parts: list[dict], items: int) -> tuple[float, list[torch.Tensor]]:
    model.zero_grad()
    total = 0.0
    for part in parts:
        inputs = dict(part)
        labels = inputs.pop("labels")
        loss = token_mean_loss(model(**inputs), labels, items)
        loss.backward()
        total += loss.item()
    return total, [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("fixture", ["tiny_t5_dir", "tiny_bart_dir"])
@pytest.mark.parametrize("multiple", [None, 8])
def test_micro_batches_give_the_batchs_loss_and_gradient(fixture, multiple, request, tiny_model_sentences) -> None:
    folder = request.getfixturevalue(fixture)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()  # eval(): no dropout, so runs are comparable
    rng = random.Random(3)
    texts = [" ".join(rng.sample(tiny_model_sentences, rng.choice([1, 1, 1, 6]))) for _ in range(12)]
    targets = [t.split(" ", 2)[0] for t in texts]
    batch = _batch(tokenizer, model, texts, targets, multiple)
    parts = split_batch(batch, GroupCost(overhead_tokens=4), pad_to_multiple_of=multiple)
    assert len(parts) > 1
    assert sum(len(p["input_ids"]) for p in parts) == 12
    widths = [p["input_ids"].shape[1] for p in parts]
    assert max(widths) == batch["input_ids"].shape[1] and min(widths) < max(widths)  # padding was cut
    if multiple:
        assert all(w % multiple == 0 for w in widths)
    items = int(batch["labels"].ne(-100).sum())
    whole_loss, whole_grads = _loss_and_grads(model, [batch], items)
    split_loss, split_grads = _loss_and_grads(model, parts, items)
    assert split_loss == pytest.approx(whole_loss, rel=1e-5)
    for whole, split in zip(whole_grads, split_grads, strict=True):
        torch.testing.assert_close(split, whole, rtol=1e-4, atol=1e-6)
    padding = PaddingCount()
    for part in parts:
        padding.add(part)
    whole_padding = PaddingCount()
    whole_padding.add(batch)
    assert padding.real == whole_padding.real and padding.share < whole_padding.share


def test_a_batch_without_labels_or_of_one_row_is_left_alone() -> None:
    cost = GroupCost(overhead_tokens=1)
    one = {
        "input_ids": torch.ones(1, 5, dtype=torch.long),
        "attention_mask": torch.ones(1, 5),
        "labels": torch.ones(1, 3),
    }
    assert split_batch(one, cost) == [one]
    unlabeled = {"input_ids": torch.ones(4, 5, dtype=torch.long), "attention_mask": torch.ones(4, 5)}
    assert split_batch(unlabeled, cost) == [unlabeled]
