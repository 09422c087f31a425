"""Which metrics exist, what names each produces, the defaults per task, and the best-model names.

No third-party imports: :mod:`job.params` validates ``metrics``, ``task`` and ``metric_for_best_model`` against
these tables without loading sacrebleu or rouge_score. The scoring itself is :mod:`job.metrics`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
METRICS = ("rouge", "bleu", "chrf", "chrfpp", "exact_match")
"""Metric names a job may ask for; each produces the names in :data:`PRODUCES`."""
PRODUCES: dict[str, tuple[str, ...]] = {
    "rouge": ROUGE_TYPES,
    "bleu": ("bleu",),
    "chrf": ("chrf",),
    "chrfpp": ("chrfpp",),
    "exact_match": ("exact_match",),
}
GEN_LEN = "gen_len"
LOSS = "loss"

# Per-task defaults: the metrics people report for the task that need no downloads. All are cheap (1,000
# summary-length pairs: ~3 s for all five on one CPU core, ROUGE about half of it, bench/metrics_speed.py); the
# others are left out as noise for that task (exact match of a summary is ~0, nobody compares ROUGE of translations).
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "translation": ("bleu", "chrf", "chrfpp"),
    "summarization": ("rouge", "chrf"),
    "question_answering": ("exact_match", "rouge", "chrf"),  # rouge1 F1 ≈ SQuAD's token F1
    "paraphrase": ("bleu", "chrf", "rouge"),
    "code": ("exact_match", "bleu", "chrf"),  # SQL / code generation; chrF tracks human judgement better than BLEU
    "grammar_correction": ("exact_match", "chrf", "bleu"),  # no ERRANT/M2 offline
    "title": ("rouge", "chrf", "exact_match"),
}


def default_metrics(task: str | None = None) -> tuple[str, ...]:
    """The metrics computed for ``task`` (a key of :data:`TASK_METRICS`); no task: all of :data:`METRICS`."""
    if task is None:
        return METRICS
    if task not in TASK_METRICS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASK_METRICS)}")
    return TASK_METRICS[task]


def check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    """``metrics`` without duplicates, in order; ValueError naming every unknown one and the allowed names."""
    if isinstance(metrics, str):
        raise ValueError(f"metrics must be a list of names, got the string {metrics!r}")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        hint = " (chrF++ is called chrfpp)" if any(m.lower() == "chrf++" for m in unknown) else ""
        raise ValueError(f"unknown metrics {', '.join(map(repr, unknown))}{hint}; allowed: {', '.join(METRICS)}")
    return tuple(dict.fromkeys(metrics))


def metric_names(metrics: Sequence[str]) -> tuple[str, ...]:
    """The result names :func:`score` returns for ``metrics`` (``compute_metrics`` adds ``gen_len``)."""
    return tuple(name for metric in check_metrics(metrics) for name in PRODUCES[metric])


def best_metric_names() -> tuple[str, ...]:
    """Every name ``metric_for_best_model`` may take: ``loss`` and every name a metric produces.

    ``gen_len`` is not one: longer (or shorter) outputs are not a better model.
    """
    return (LOSS, *metric_names(METRICS))


def greater_is_better(name: str) -> bool:
    """Direction of a best-model metric (``eval_`` prefix allowed): only ``loss`` is better lower."""
    bare = name.removeprefix("eval_")
    if bare not in best_metric_names():
        raise ValueError(f"unknown metric {name!r}; allowed: {', '.join(best_metric_names())}")
    return bare != LOSS


def resolve_metrics(metrics: Sequence[str] | None, task: str | None) -> tuple[str, ...]:
    """The metrics a job computes: ``metrics`` when given, else :func:`default_metrics` of ``task``."""
    return check_metrics(metrics) if metrics else default_metrics(task)


def best_metric_problem(name: str, metrics: Sequence[str]) -> str | None:
    """Why ``name`` cannot pick the best model when ``metrics`` are computed (None: it can)."""
    bare = name.removeprefix("eval_")
    produced = (LOSS, *metric_names(metrics))
    if bare in produced:
        return None
    if bare == GEN_LEN:
        return f"gen_len is a length, not a quality (longer outputs are no better model); choose {', '.join(produced)}"
    if bare in best_metric_names():
        source = next(metric for metric, names in PRODUCES.items() if bare in names)
        return f"{bare} is not computed (metrics: {', '.join(metrics)}); add {source} to metrics or choose " + (
            ", ".join(produced)
        )
    return f"must be one of {', '.join(produced)}"


TASK_HELP = (
    "What the model learns; picks the default metrics: "
    + "; ".join(f"{task}: {', '.join(names)}" for task, names in TASK_METRICS.items())
    + f". auto: translation when src_lang/tgt_lang or a translation.* column is given, else {', '.join(METRICS)}."
)
METRICS_HELP = f"Metrics to compute, comma-separated ({', '.join(METRICS)}); default by task."
BEST_METRIC_HELP = (
    f"loss (lower is better) or a computed metric (higher is better): {', '.join(best_metric_names()[1:])}."
)
_LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")  # en, de_DE, zho_Hans, pt-BR


def resolve_task(task: str, *, languages: Sequence[str | None], columns: Sequence[str]) -> str | None:
    """``task``, or for ``auto``: translation given a language pair or a ``translation.xx`` column, else None."""
    if task != "auto":
        return task
    pair = any(languages) or any(column.startswith("translation.") for column in columns)
    return "translation" if pair else None


def column_language(column: str) -> str | None:
    """The language of a dotted column whose key is a language code (``translation.de`` → ``de``), else None."""
    key = column.rpartition(".")[2] if "." in column else ""
    return key if _LANGUAGE_CODE.match(key) else None
