"""Evaluation that does not dominate the run: a generation batch sized by itself, and an optional fixed subset.

Generation decodes one token per step for the whole batch, so its time goes with the number of batches far more
than with their size; the default ``batch_size=2`` made evaluation generate two rows at a time. Unless
``eval_batch_size`` is given, the batch is sized here from the longest validation row (rows are generated
longest-first, so the first batch is the largest) and the device:

* CPU: a budget of :data:`CPU_TOKEN_BUDGET` tokens (input + generated) per batch. Measured on 2 cores (T5
  d_model 256, 4+4 layers, 128 rows, 64 input + 32 generated tokens): batch 2 took 23.8 s, 8 took 9.4 s,
  32 took 4.3 s, 128 took 3.4 s; with 256-token inputs the gain flattens past ~4k tokens per batch.
* CUDA: half the memory left after the optimizer's state, over an estimate of what one row holds during
  generation (the encoder output and the decoder's self- and cross-attention caches, per beam, and the logits).

The one encoder pass of each evaluation batch (:meth:`job.training.trainer.JobTrainer.prediction_step`) runs
on CPU in chunks of about :data:`CPU_ENCODER_CHUNK_TOKENS` input tokens, each at its own width
(:func:`encoder_chunks`), so that the batch can be as large as generation likes while the encoder works on
cache-sized pieces without the batch's padding. Measured on 2 cores (T5 d_model 256, 4+4
layers, 200 rows, longest input ~200 tokens; one encoder pass per batch, no chunks): with 2 generated tokens,
eval batch 80 took 4.48 s, 16 took 2.42 s and 8 took 2.65 s; with 32 generated tokens, batch 70 took 5.77 s, 24
took 5.25 s and 12 took 6.14 s. With the chunks, in pairs: batch 80 (2 generated) 3.11 and 2.82 s against 3.97 and
4.12 s without; batch 70 (32 generated) 4.56 and 4.61 s against 5.52 and 6.19 s.

Generation already stops a batch as soon as every row has produced ``eos_token_id``;
:func:`ensure_eos` makes sure the model's generation config has one.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import datasets
import pyarrow.compute as pc

log = logging.getLogger(__name__)

CPU_TOKEN_BUDGET = 16_384
CPU_ENCODER_CHUNK_TOKENS = 4096
MAX_EVAL_BATCH = 256
ADAM_BYTES_PER_PARAMETER = 16  # fp32 gradient + two fp32 moments + the fp32 master weight under mixed precision


def longest_row(dataset: datasets.Dataset, column: str) -> int:
    """The largest value of an int column, read from Arrow (no Python list of the whole column)."""
    if len(dataset) == 0:
        return 0
    return int(pc.max(dataset.data.column(column)).as_py() or 0)


def row_bytes(config: Any, *, input_tokens: int, generated_tokens: int, num_beams: int, dtype_bytes: int) -> int:
    """What one validation row holds on the device while it is generated (an estimate, see the module doc)."""
    d_model = int(getattr(config, "d_model", None) or getattr(config, "hidden_size", 512))
    layers = int(getattr(config, "num_decoder_layers", None) or getattr(config, "decoder_layers", None) or 6)
    vocab = int(getattr(config, "vocab_size", 32_000))
    caches = 2 * layers * (input_tokens + generated_tokens) * d_model  # self- and cross-attention keys and values
    encoder = 4 * input_tokens * d_model  # the encoder output and its largest intermediate
    return num_beams * (dtype_bytes * (caches + encoder) + 4 * 2 * vocab)  # fp32 logits and scores per step


def auto_eval_batch_size(
    *,
    longest_input: int,
    generated_tokens: int,
    num_beams: int,
    rows: int,
    config: Any = None,
    free_bytes: int | None = None,
    trainable_parameters: int = 0,
    dtype_bytes: int = 4,
) -> tuple[int, str]:
    """The per-device generation batch and why: a CPU token budget, or (``free_bytes`` given) GPU memory."""
    if free_bytes is None:
        size = CPU_TOKEN_BUDGET // max(1, (longest_input + generated_tokens) * num_beams)
        why = f"{CPU_TOKEN_BUDGET} tokens per batch / ({longest_input} input + {generated_tokens} generated)"
    else:
        budget = max(0, free_bytes - ADAM_BYTES_PER_PARAMETER * trainable_parameters) // 2
        per_row = row_bytes(
            config,
            input_tokens=longest_input,
            generated_tokens=generated_tokens,
            num_beams=num_beams,
            dtype_bytes=dtype_bytes,
        )
        size = budget // max(1, per_row)
        why = f"half of {budget * 2 / 2**30:.1f} GiB free after the optimizer / {per_row / 2**20:.1f} MiB per row"
    return max(1, min(size, MAX_EVAL_BATCH, max(1, rows))), why


def encoder_chunks(device_type: str, lengths: list[int]) -> list[tuple[int, int]]:
    """Row ranges ``[start, end)`` for the encoder pass of one evaluation batch whose rows have ``lengths`` tokens.

    On a GPU the whole batch is one chunk. On CPU consecutive rows are grouped while ``rows × longest`` stays
    within :data:`CPU_ENCODER_CHUNK_TOKENS` (at least one row per chunk); each chunk is then run at its own
    width, so a large generation batch of sorted rows does not pad its short rows to the longest one.
    """
    if device_type != "cpu" or not lengths:
        return [(0, len(lengths))]
    chunks: list[tuple[int, int]] = []
    start, widest = 0, 0
    for index, length in enumerate(lengths):
        wider = max(widest, length)
        if index > start and (index - start + 1) * wider > CPU_ENCODER_CHUNK_TOKENS:
            chunks.append((start, index))
            start, wider = index, length
        widest = wider
    chunks.append((start, len(lengths)))
    return chunks


def subset_rows(rows: int, max_samples: int | None, *, seed: int) -> list[int] | None:
    """The indices of a fixed random ``max_samples`` of ``rows`` rows, in order; None when all of them are used."""
    if max_samples is None or rows <= max_samples:
        return None
    return sorted(random.Random(seed).sample(range(rows), max_samples))


def eval_subset(valid: datasets.Dataset | None, max_samples: int | None, *, seed: int) -> datasets.Dataset | None:
    """A fixed random ``max_samples`` of the validation rows, in their order (longest-first when sorted)."""
    keep = None if valid is None else subset_rows(len(valid), max_samples, seed=seed)
    if valid is None or keep is None:
        return valid
    log.info(
        "Evaluating on a fixed random %d of the %d validation rows during training (eval_max_samples); "
        "the final evaluation uses all of them",
        max_samples,
        len(valid),
    )
    return valid.select(keep)


def ensure_eos(model: Any, tokenizer: Any) -> None:
    """Give the generation config the tokenizer's ``eos_token_id`` if it has none, so generation stops early."""
    config = getattr(model, "generation_config", None)
    if config is not None and config.eos_token_id is None and tokenizer.eos_token_id is not None:
        config.eos_token_id = tokenizer.eos_token_id
        log.info("generation_config had no eos_token_id: using the tokenizer's (%d)", tokenizer.eos_token_id)
