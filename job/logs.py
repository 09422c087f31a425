"""Log set-up: one plain line per record (readable in CloudWatch, Cloud Logging and kubectl logs).

Every line goes through :class:`MaskingFormatter`: known secret values, URL credentials and token shapes are
masked (:func:`job.secrets.mask`) in the message, its arguments and any traceback, whoever logged it.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterable

from job.context import ProcessInfo
from job.secrets import mask, remember

FORMAT = "%(asctime)s %(levelname)s {where}%(name)s: %(message)s"
SECRET_LEAKING_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "google.auth", "google.cloud")


class MaskingFormatter(logging.Formatter):
    """The usual one-line format, with every secret masked in the finished text (traceback included)."""

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


class _NoDuplicateErrors(logging.Filter):
    """Drops the ERROR records of libraries that log the error they are about to raise (datasets' file builders):
    the job's own one-line error (job.exits) reports it, so a failure reads as exactly one ERROR line."""

    PREFIXES = ("datasets.packaged_modules",)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR or not record.name.startswith(self.PREFIXES)


def install_handler(process: ProcessInfo, *, verbose: bool = False, secrets: Iterable[str] = ()) -> int:
    """The root handler alone (no library imports: fast enough for a command-line error); returns the level."""
    remember(secrets)
    level = logging.DEBUG if verbose else logging.INFO if process.is_main else logging.WARNING
    where = f"[rank {process.rank}] " if process.world_size > 1 else ""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(MaskingFormatter(FORMAT.format(where=where), datefmt="%Y-%m-%dT%H:%M:%S"))
    handler.addFilter(_NoDuplicateErrors())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings.warn() text goes through the masking handler too
    return level


def setup_logging(process: ProcessInfo, *, verbose: bool = False, secrets: Iterable[str] = ()) -> None:
    """INFO on the main process, WARNING elsewhere, so N processes don't print N copies of everything."""
    main = process.is_main
    level = install_handler(process, verbose=verbose, secrets=secrets)

    import datasets
    import transformers

    transformers.utils.logging.set_verbosity(logging.WARNING if not verbose else logging.INFO)
    transformers.utils.logging.disable_default_handler()
    transformers.utils.logging.enable_propagation()
    datasets.utils.logging.set_verbosity(logging.WARNING)
    # datasets and huggingface_hub attach their own stderr handler and also propagate: every record of theirs
    # (e.g. Hub retries) would print twice, once without a timestamp. Let the root handler print it once.
    for name in ("datasets", "huggingface_hub"):
        logging.getLogger(name).handlers.clear()
    logging.getLogger("absl").setLevel(logging.WARNING)  # rouge_score logs "Using default tokenizer" per call

    # Their DEBUG records print signed request headers (the AWS access key id, x-amz-security-token): never
    # below INFO, even with --verbose (tests/test_secrets.py).
    for name in SECRET_LEAKING_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.INFO))
    if not sys.stderr.isatty():
        transformers.utils.logging.disable_progress_bar()  # "Writing model shards" bars make noise in log viewers
    if not main:
        datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
    # datasets' sort (length-sorted evaluation) uses a pyarrow option pyarrow 25 deprecates; nothing for users to do
    warnings.filterwarnings("ignore", message=".*null_placement in SortOptions is deprecated.*")
    # peft's LoRA setup reads a transformers attribute that transformers 5 renamed; nothing for users to do
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing` is deprecated.*")
    # peft's prepare_model_for_kbit_training (gradient checkpointing for 8/4-bit LoRA) calls the old name too
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing_enable` is deprecated.*")
    # bitsandbytes on CPU suggests an optional Hub "kernels" package for faster 4-bit matmuls, at import time,
    # in every run (quantized or not); int4 works without it.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(max(level, logging.ERROR))
