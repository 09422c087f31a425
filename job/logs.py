"""Log set-up: one plain line per record (readable in CloudWatch, Cloud Logging and kubectl logs)."""

from __future__ import annotations

import logging
import sys
import warnings

from job.context import ProcessInfo

FORMAT = "%(asctime)s %(levelname)s {where}%(name)s: %(message)s"
SECRET_LEAKING_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "google.auth", "google.cloud")


def setup_logging(process: ProcessInfo, *, verbose: bool = False) -> None:
    """INFO on the main process, WARNING elsewhere, so N processes don't print N copies of everything."""
    main = process.is_main
    level = logging.DEBUG if verbose else logging.INFO if main else logging.WARNING
    where = f"[rank {process.rank}] " if process.world_size > 1 else ""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT.format(where=where), datefmt="%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)

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
