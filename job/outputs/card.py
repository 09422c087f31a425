"""The model card (``README.md`` of the output folder) and the training-curves image, from plain values.

:func:`render_card` writes Hub metadata that fits transformers 5, which removed the ``text2text-generation``,
``summarization`` and ``translation`` pipelines: no ``pipeline_tag`` (the Hub's task pages still find the model by
its tags), and a snippet that loads the model and calls ``generate`` directly. :func:`plot_curves` draws the train
and eval loss and every evaluation metric against the step, one point per evaluation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from job.metric_sets import GEN_LEN, LOSS, greater_is_better
from job.metrics import language_subtags

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Keys of an evaluation that describe speed, not quality: not in the tables' metric columns nor on the plot.
_NOT_METRICS = re.compile(r"_(runtime|samples_per_second|steps_per_second|tokens_per_second)$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Language codes that are also tokenizer tokens: mBART-50 (de_DE, en_XX) and NLLB (deu_Latn).
_LANGUAGE_TOKEN = re.compile(r"^([a-z]{2}_[A-Z]{2}|[a-z]{2}_XX|[a-z]{3}_[A-Z][a-z]{3})$")
# Hub metric ids for the names our metrics produce (the YAML `metrics:` list).
_HUB_METRIC = {"rouge": "rouge", "bleu": "bleu", "chrf": "chrf", "exact_match": "exact_match"}


def render_card(
    *,
    base_model: str,
    data_path: str,
    project_name: str,
    peft: bool,
    source_prefix: str,
    generation: Mapping[str, Any],
    hyperparameters: Mapping[str, Any],
    metrics: Mapping[str, Any],
    evaluations: Sequence[Mapping[str, Any]],
    train_losses: Sequence[Mapping[str, Any]],
    source_lang: str | None = None,
    target_lang: str | None = None,
    image: str | None = None,
    model_id: str | None = None,
    task: str | None = None,
) -> str:
    """README.md for the model: YAML metadata, usage snippet, final metrics, evaluation history, curves, settings.

    ``metrics``: the final metrics (``eval_rougeL``… or bare names; ``test_*`` make a test table; other numbers
    such as ``train_runtime`` go to the training section). ``evaluations``: every evaluation in order,
    ``{"step", "epoch", "eval_loss", "eval_rougeL", …}``. ``train_losses``: ``{"step", "loss"}`` (only counted
    here; the image shows them). ``image``: file name of :func:`plot_curves`' PNG next to the card.
    ``model_id``: what users pass to ``from_pretrained`` (default: the project folder's name). ``task``: an
    extra Hub tag, e.g. ``translation``.
    """
    name = Path(project_name).name or project_name
    test = {k.removeprefix("test_"): v for k, v in metrics.items() if k.startswith("test_") and _is_score(k, v)}
    final, other = _split_final({k: v for k, v in metrics.items() if not k.startswith("test_")})
    sections = [
        _metadata(base_model, peft=peft, languages=(source_lang, target_lang), final=final, task=task),
        f"# {name}\n\n{_summary(base_model, data_path, peft, source_lang, target_lang)}",
        "## Use it\n\n```python\n"
        + usage_snippet(
            model_id or name,
            peft=peft,
            source_prefix=source_prefix,
            generation=generation,
            source_lang=source_lang,
            target_lang=target_lang,
        )
        + "```\n\ntransformers 5 has no pipeline for encoder-decoder generation: load the model and call "
        "`generate` as above.",
        _evaluation(final, evaluations, image, test),
        "## Generation settings (used for evaluation)\n\n" + _table(("setting", "value"), generation.items()),
        "## Training\n\n"
        + _table(("hyperparameter", "value"), [*hyperparameters.items(), *other.items()])
        + _last_train_loss(train_losses),
    ]
    return "\n\n".join(sections) + "\n"


def usage_snippet(
    model_id: str,
    *,
    peft: bool,
    source_prefix: str,
    generation: Mapping[str, Any],
    source_lang: str | None = None,
    target_lang: str | None = None,
) -> str:
    """Python that loads the model (or adapter), prepends the source prefix, generates and prints one output."""
    loader = "AutoPeftModelForSeq2SeqLM" if peft else "AutoModelForSeq2SeqLM"
    imports = (
        "from peft import AutoPeftModelForSeq2SeqLM\nfrom transformers import AutoTokenizer\n"
        if peft
        else "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer\n"
    )
    lines = [imports, f"tokenizer = AutoTokenizer.from_pretrained({_py(model_id)})"]
    lines.append(f"model = {loader}.from_pretrained({_py(model_id)})")
    if source_lang and _LANGUAGE_TOKEN.match(source_lang):
        lines.append(f"tokenizer.src_lang = {_py(source_lang)}")
    lines += ["", 'text = "Your input text."']
    lines.append(f"inputs = tokenizer({_py(source_prefix)} + text" if source_prefix else "inputs = tokenizer(text")
    lines[-1] += ', return_tensors="pt")'
    kwargs = ["**inputs", *(f"{k}={_py(v)}" for k, v in generation.items() if _literal_kwarg(k, v))]
    if target_lang and _LANGUAGE_TOKEN.match(target_lang) and "forced_bos_token_id" not in generation:
        # mBART-50/NLLB: the output must start with the target language code.
        kwargs.append(f"forced_bos_token_id=tokenizer.convert_tokens_to_ids({_py(target_lang)})")
    call = f"outputs = model.generate({', '.join(kwargs)})"
    if len(call) > 100:
        call = "outputs = model.generate(\n" + "".join(f"    {k},\n" for k in kwargs) + ")"
    lines.append(call)
    lines.append("print(tokenizer.decode(outputs[0], skip_special_tokens=True))")
    return "\n".join(lines) + "\n"


def _py(value: Any) -> str:
    """A Python literal: JSON's strings and numbers are valid Python, and read like the rest of the snippet."""
    if isinstance(value, bool):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _literal_kwarg(key: str, value: Any) -> bool:
    return key.isidentifier() and value is not None and isinstance(value, bool | int | float | str)


def _metadata(
    base_model: str,
    *,
    peft: bool,
    languages: tuple[str | None, str | None],
    final: Mapping[str, float],
    task: str | None,
) -> str:
    # JSON strings are valid YAML scalars: quoting every value keeps odd ids and codes from breaking the YAML.
    lines = ["---", f"library_name: {'peft' if peft else 'transformers'}"]
    if _is_hub_id(base_model):
        lines.append(f"base_model: {json.dumps(base_model)}")
    codes = list(dict.fromkeys(language_subtags(c)[0] for c in languages if c and language_subtags(c)[0]))
    if codes:
        lines += ["language:", *(f"- {json.dumps(c)}" for c in codes)]
    tags = ["seq2seq", "seq2seq-job", *(["lora", "peft"] if peft else []), *([task] if task else [])]
    lines += ["tags:", *(f"- {json.dumps(t)}" for t in dict.fromkeys(tags))]
    hub_metrics = dict.fromkeys(_HUB_METRIC[m] for name in final for m in _HUB_METRIC if name.startswith(m))
    if hub_metrics:
        lines += ["metrics:", *(f"- {json.dumps(m)}" for m in hub_metrics)]
    return "\n".join([*lines, "---"])


def _is_hub_id(model: str) -> bool:
    return bool(_HUB_ID.match(model)) and not model.startswith("builtin:") and not Path(model).exists()


def _summary(base_model: str, data_path: str, peft: bool, source_lang: str | None, target_lang: str | None) -> str:
    base = f"[`{base_model}`](https://huggingface.co/{base_model})" if _is_hub_id(base_model) else f"`{base_model}`"
    what = "A LoRA adapter for" if peft else "Fine-tuned from"
    text = f"{what} {base} on `{data_path}` with seq2seq-job."
    if source_lang or target_lang:
        text += f" Languages: {source_lang or '?'} → {target_lang or '?'}."
    return text


def _last_train_loss(train_losses: Sequence[Mapping[str, Any]]) -> str:
    if not train_losses:
        return ""
    last = train_losses[-1]
    return f"\n\nLast logged training loss: {_fmt(last.get('loss'), 'loss')} at step {_fmt(last.get('step'))}."


def _split_final(metrics: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """Final metrics into (quality metrics by bare name, everything else numeric such as train_runtime)."""
    final: dict[str, float] = {}
    other: dict[str, Any] = {}
    for key, value in metrics.items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        bare = key.removeprefix("eval_")
        if (key.startswith("eval_") or _known(bare)) and not _NOT_METRICS.search(key):
            final[bare] = float(value)
        else:
            other[key] = value
    return final, other


def _known(name: str) -> bool:
    try:
        greater_is_better(name)
    except ValueError:
        return name == GEN_LEN
    return True


def _direction(name: str) -> str:
    return ("higher" if greater_is_better(name) else "lower") if name != GEN_LEN and _known(name) else ""


def metric_columns(evaluations: Sequence[Mapping[str, Any]]) -> list[str]:
    """Bare names of the quality metrics in the evaluations, in order of first appearance (loss first)."""
    names = {
        key.removeprefix("eval_"): None
        for evaluation in evaluations
        for key, value in evaluation.items()
        if key.startswith("eval_") and isinstance(value, int | float) and not _NOT_METRICS.search(key)
    }
    return sorted(names, key=lambda n: (n != LOSS, n == GEN_LEN))  # stable: loss, metrics, gen_len


def _is_score(key: str, value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not _NOT_METRICS.search(key)


def _evaluation(
    final: Mapping[str, float],
    evaluations: Sequence[Mapping[str, Any]],
    image: str | None,
    test: Mapping[str, float] | None = None,
) -> str:
    parts = ["## Evaluation"]
    for title, scores in (("Final (validation)", final), ("Test", test or {})):
        if scores:
            rows = [(name, _fmt(value, name), _direction(name)) for name, value in scores.items()]
            parts.append(f"### {title}\n\n" + _table(("metric", "value", "better"), rows))
    if evaluations:
        columns = metric_columns(evaluations)
        rows = [
            (_fmt(e.get("step")), _fmt(e.get("epoch"), "epoch"), *(_fmt(e.get(f"eval_{c}"), c) for c in columns))
            for e in evaluations
        ]
        parts.append(f"### History ({len(evaluations)} evaluations)\n\n" + _table(("step", "epoch", *columns), rows))
    else:
        parts.append("No evaluation ran (no validation split).")
    if image:
        parts.append(f"### Curves\n\n![Loss and metrics by step]({image})")
    return "\n\n".join(parts)


def _table(header: Sequence[str], rows: Any) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else _fmt(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _fmt(value: Any, column: str | None = None) -> str:
    """A cell: losses with 4 decimals, metrics (0–100) and epochs with 2, anything else as short as exact."""
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if value != value:  # NaN
        return "–"
    if column is None:
        return f"{value:.6g}"  # lr 5e-05, batch 8, ratio 0.1
    return f"{value:.4f}" if column.endswith(LOSS) else f"{value:.2f}"


def plot_curves(
    evaluations: Sequence[Mapping[str, Any]], train_losses: Sequence[Mapping[str, Any]], path: str | Path
) -> Figure:
    """Save a PNG: loss (train line, eval points) and each metric (one point per evaluation) against the step.

    Uses matplotlib's object API with the Agg canvas: no display, no pyplot state, nothing to close. Returns the
    figure, whose line data tests (and callers) can read.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(11, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, metric_axes = figure.subplots(1, 2)
    steps = [e.get("step", i + 1) for i, e in enumerate(evaluations)]

    if train_losses:
        loss_axes.plot([r["step"] for r in train_losses], [r["loss"] for r in train_losses], label="train loss")
    if any("eval_loss" in e for e in evaluations):
        loss_axes.plot(steps, [_number(e.get("eval_loss")) for e in evaluations], "o-", label="eval loss")
    loss_axes.set(title="Loss", xlabel="step", ylabel="loss")

    columns = [c for c in metric_columns(evaluations) if c not in (LOSS, GEN_LEN)]
    for column in columns:
        values = [_number(e.get(f"eval_{column}")) for e in evaluations]
        metric_axes.plot(steps, values, "o-", label=column)
    metric_axes.set(title="Evaluation metrics", xlabel="step", ylabel="score (0–100)")
    if not columns:
        metric_axes.text(0.5, 0.5, "no evaluation metrics", ha="center", va="center", transform=metric_axes.transAxes)
    # Losses fall and metrics rise: those corners are where the curves usually are not.
    for axes, corner in ((loss_axes, "upper right"), (metric_axes, "lower right")):
        axes.grid(alpha=0.3)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps
        if axes.lines:
            axes.legend(fontsize="small", loc=corner)
    figure.savefig(path, format="png")
    return figure


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else float("nan")


def train_losses(log_history: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    """``{"step", "loss"}`` of every training log entry in the Trainer's ``state.log_history``."""
    return [{"step": e["step"], "loss": e["loss"]} for e in log_history if "loss" in e and "step" in e]
