"""``seq2seq-job`` command line: one kebab-case flag per parameter, grouped as in ``--help``.

    seq2seq-job train --data-path data.csv --model google/flan-t5-small --valid-split validation
    seq2seq-job validate --params job.json          # (or train --dry-run) check params and data, no training
    seq2seq-job --train --data-path data.csv …      # AutoTrain style

Every command ends in :func:`job.exits.run`, the one place that turns exceptions into exit codes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from job import __version__, exits
from job.context import RunContext, environment, read_context
from job.errors import EXIT_FAILURE, EXIT_OK, EXIT_PREEMPTED, EXIT_USER_ERROR, UserError
from job.generation import SETTINGS
from job.params import ENV_PREFIX, PARAMS_ENV, Seq2SeqParams
from job.secrets import secret_values
from job.usage import ArgParser, UsageError, warn_token_flag

log = logging.getLogger("job")

COMMANDS = ("train", "validate", "predict", "evaluate")
GROUPS = ("Data", "Model", "Training", "Evaluation", "Output", "Storage", "Resilience", "Distributed")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgParser(
        prog="seq2seq-job",
        description="Fine-tune encoder-decoder models (T5, BART, mBART, Pegasus, Marian) with Seq2SeqTrainer.",
        epilog=f"Every parameter can also come from the environment ({ENV_PREFIX}LR=1e-4) or a JSON file "
        f"(--params FILE, or {PARAMS_ENV}=FILE|JSON). Priority: flags > environment > JSON > defaults. "
        f"Exit codes: {EXIT_OK} ok, {EXIT_USER_ERROR} bad input (don't retry), {EXIT_FAILURE} other failure, "
        f"{EXIT_PREEMPTED} stopped by SIGTERM/SIGINT after saving a checkpoint (retry resumes).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    commands = (
        ("train", "Train, evaluate and write the outputs."),
        ("validate", "Check params and data, print token statistics; no training."),
    )
    for name, text in commands:
        command = sub.add_parser(name, help=text, description=text, usage=f"seq2seq-job {name} [options]")
        _add_param_flags(command, dry_run=name == "train")
    _add_predict(sub)
    _add_evaluate(sub)
    return parser


def _add_predict(sub: Any) -> None:
    text = "Generate with a trained output folder (inputs from --text or --input-file; JSON lines out)."
    command = sub.add_parser("predict", help=text, description=text, usage="seq2seq-job predict [options]")
    command.add_argument("--model-dir", required=True, help="A finished project_name folder (model or adapter).")
    command.add_argument("--text", action="append", default=[], help="An input text (repeatable).")
    command.add_argument("--input-file", help=".txt (one input per line), .csv, .tsv, .jsonl, .json or .parquet.")
    command.add_argument("--text-column", default="text", help="Column of --input-file holding the inputs.")
    command.add_argument("--output", help="Write JSON lines here instead of stdout.")
    command.add_argument("--batch-size", type=int, default=16)
    command.add_argument("--source-prefix", help="Default: the training run's source_prefix.")
    _add_generation_flags(command)
    command.add_argument("--verbose", action="store_true", help="Debug logging.")


def _add_evaluate(sub: Any) -> None:
    text = (
        "Score a model folder (ours, or any transformers seq2seq folder) on a split with a target column: "
        "prints the metrics JSON; --output DIR also writes DIR/evaluation.json and DIR/predictions.jsonl."
    )
    command = sub.add_parser("evaluate", help=text, description=text, usage="seq2seq-job evaluate [options]")
    trained = "default: the folder's training_params.json, else"
    command.add_argument("--model-dir", required=True, help="A model (or LoRA adapter) folder.")
    command.add_argument("--data-path", required=True, help="Data as for train: a file, a folder, a Hub dataset…")
    command.add_argument("--split", default="test", help="Split expression to score, e.g. test or test[:500].")
    command.add_argument("--text-column", help=f"Input column, or dict.key ({trained} text).")
    command.add_argument("--target-column", help=f"Reference column, or dict.key ({trained} target).")
    command.add_argument("--output", help="Folder for evaluation.json and predictions.jsonl.")
    command.add_argument("--batch-size", type=int, default=16)
    command.add_argument("--max-samples", type=int, help="Score at most this many rows.")
    command.add_argument("--source-prefix", help=f"Prepended to every input ({trained} none).")
    command.add_argument("--max-seq-length", type=int, help=f"Input truncation ({trained} the tokenizer's).")
    command.add_argument("--metrics", help=f"Comma-separated metrics ({trained} by --task).")
    command.add_argument("--task", help=f"Picks the metrics, as train's --task ({trained} auto).")
    command.add_argument("--target-language", help=f"Targets' language for BLEU/ROUGE ({trained} detected).")
    _add_generation_flags(command)
    command.add_argument("--verbose", action="store_true", help="Debug logging.")


def _add_generation_flags(command: argparse.ArgumentParser) -> None:
    """Flags over the folder's generation_config.json (the settings the run was evaluated with)."""
    default = "default: the folder's generation_config.json"
    command.add_argument("--max-new-tokens", type=int, help=f"Most tokens generated per input ({default}).")
    command.add_argument("--num-beams", type=int, help=f"Beam-search width ({default}).")
    command.add_argument("--length-penalty", type=float, help=f"Beam-search length penalty ({default}).")
    command.add_argument("--no-repeat-ngram-size", type=int, help=f"Never repeat an n-gram this long ({default}).")


def generation_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in SETTINGS}


def _add_param_flags(parser: argparse.ArgumentParser, *, dry_run: bool) -> None:
    general = parser.add_argument_group("General")
    general.add_argument("--params", metavar="FILE", help="JSON file of parameters (lowest priority after defaults).")
    general.add_argument("--train", action="store_true", help=argparse.SUPPRESS)  # AutoTrain's `--train`
    general.add_argument("--verbose", action="store_true", help="Debug logging.")
    if dry_run:
        general.add_argument("--dry-run", action="store_true", help="Same as `validate`: check and exit.")
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for name, info in Seq2SeqParams.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        group = groups[str(extra.get("group", "Training"))]
        default = "required" if info.is_required() else f"default: {info.get_default()!r}"
        if name == "token":
            default = "default: HF_TOKEN"
        help_text = f"{info.description} ({default})".replace("%", "%%")
        kebab = f"--{name.replace('_', '-')}"
        for flag, target, text in ((kebab, group, help_text), (f"--{name}", parser, argparse.SUPPRESS)):
            if flag == kebab and target is parser:
                continue
            kind: dict[str, Any] = (
                {"action": argparse.BooleanOptionalAction}
                if info.annotation in (bool, bool | None)  # bool | None: unset = the default decides
                else {"metavar": _metavar(name, info.annotation)}
            )
            target.add_argument(flag, dest=name, default=argparse.SUPPRESS, help=text, **kind)


def _metavar(name: str, annotation: Any) -> str:
    text = str(annotation)
    if "Literal" in text and name not in ("optimizer", "scheduler"):
        choices = [a for a in getattr(annotation, "__args__", ()) if isinstance(a, str)]
        if not choices:  # Optional[Literal[...]]
            for arg in getattr(annotation, "__args__", ()):
                choices += [a for a in getattr(arg, "__args__", ()) if isinstance(a, str)]
        return "{" + ",".join(choices) + "}" if choices else name.upper()
    return name.upper()


def normalise_argv(argv: list[str]) -> list[str]:
    """Accept `seq2seq-job --train …` (AutoTrain) and a bare flag list as `train …`."""
    if (argv and argv[0] in COMMANDS) or any(a in ("-h", "--help", "--version") for a in argv[:1]):
        return argv
    if not argv:
        return ["--help"]
    return ["train", *argv] if argv[0].startswith("-") else argv  # a mistyped command is reported as one


def main(argv: Sequence[str] | None = None) -> int:
    """``seq2seq-job``: parse, then run the command through the one exit path (job.exits)."""
    argv = normalise_argv(list(sys.argv[1:] if argv is None else argv))
    env = environment()
    process = read_context(env).process
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:  # one masked line and exit 2, through the same exit path as every failure
        from job.logs import install_handler

        install_handler(process, secrets=secret_values(env))
        error = exc
        return exits.run(lambda: _raise(error), name="seq2seq-job", env=env)
    from job.logs import setup_logging

    setup_logging(process, verbose=args.verbose, secrets=secret_values(env))
    volumes: list[Path] = []  # where the job writes: a failure there with no space left is reported as disk full

    def command() -> int:
        if args.command == "predict":
            return _predict(args)
        if args.command == "evaluate":
            return _evaluate(args, env)
        from job.preflight import preflight

        warn_token_flag(argv)
        overrides = {k: v for k, v in vars(args).items() if k in Seq2SeqParams.model_fields}
        ctx, params = preflight(overrides, params_file=args.params, env=env)
        volumes.extend([params.output_dir, params.resolved_checkpoint_dir])
        if args.command == "validate" or getattr(args, "dry_run", False):
            return _validate(params, ctx)
        return _train(params, ctx)

    return exits.run(command, name=args.command, env=env, volumes=lambda: volumes)


def _raise(exc: BaseException) -> int:
    raise exc


def _predict(args: argparse.Namespace) -> int:
    from job.predict import predict, read_inputs, write_outputs

    texts = list(args.text) + (read_inputs(Path(args.input_file), args.text_column) if args.input_file else [])
    if not texts:
        raise UserError("predict needs inputs: --text 'some text' (repeatable) or --input-file FILE")
    predictions = predict(
        texts,
        model_dir=Path(args.model_dir),
        batch_size=args.batch_size,
        source_prefix=args.source_prefix,
        generation_overrides=generation_overrides(args),
    )
    write_outputs(Path(args.output) if args.output else None, texts, predictions)
    return EXIT_OK


def _evaluate(args: argparse.Namespace, env: Any) -> int:
    from job import storage
    from job.context import storage_settings
    from job.evaluate_folder import EvaluateRequest, evaluate_folder, print_report

    storage.configure(storage_settings(env))
    model_dir = Path(args.model_dir)
    request = EvaluateRequest(
        model_dir=model_dir,
        data_path=args.data_path,
        split=args.split,
        text_column=args.text_column,
        target_column=args.target_column,
        output=Path(args.output) if args.output else None,
        batch_size=args.batch_size,
        max_samples=args.max_samples,
        source_prefix=args.source_prefix,
        max_seq_length=args.max_seq_length,
        metrics=args.metrics,
        task=args.task,
        target_language=args.target_language,
        generation=generation_overrides(args),
        token=env.get("HF_TOKEN") or None,
    )
    print_report(evaluate_folder(request))
    return EXIT_OK


def _validate(params: Seq2SeqParams, ctx: RunContext) -> int:
    from job.pipeline import validate

    report = validate(params, ctx)
    print(report.pop("table"))
    print(json.dumps(report, indent=2))
    log.info("Params and data are valid; nothing was trained")
    return EXIT_OK


def _train(params: Seq2SeqParams, ctx: RunContext) -> int:
    from job import resume, storage
    from job.context import storage_settings

    log.info("Parameters: %s", json.dumps(params.redacted_dict(), sort_keys=True))
    storage.configure(storage_settings(ctx.env, s3_endpoint_url=params.s3_endpoint_url))
    # A retried pod of a finished job: exit 0 in a second, before importing torch/transformers (job.pipeline).
    metrics = None if params.overwrite else resume.finished_outputs(params)
    if metrics is None:
        from job.pipeline import train

        metrics = train(params, ctx)
    summary = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    log.info("Final metrics: %s", json.dumps(summary, sort_keys=True))
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
