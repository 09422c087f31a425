"""Tiny, randomly initialised encoder-decoder models built locally, with a tokenizer trained on the spot.

``model="builtin:t5-tiny"`` (or any name in :data:`BUILTIN_MODELS`) makes the job train a tokenizer on
the training texts and start from a random tiny model instead of a checkpoint: a demo, and test fixtures that
need no Hub access. :func:`build_builtin_model` writes an ordinary model folder (``config.json``,
``model.safetensors``, ``generation_config.json`` and the tokenizer files) that loads with
``AutoTokenizer.from_pretrained(out_dir)`` and ``AutoModelForSeq2SeqLM.from_pretrained(out_dir)``.

Every model has d_model 64, 2 encoder + 2 decoder layers, 4 heads and a feed-forward width of 128, so it has a
few hundred thousand parameters (most of them in the embedding, which grows with the vocabulary). BART and
mBART learn 512 positions, Marian has a 512-row sinusoidal table, T5's positions are relative; every tokenizer
has ``model_max_length`` 512.

Tokenizers, as transformers 5 builds them from a vocabulary (not from ``vocab_file=``):

* ``t5-tiny``: a sentencepiece unigram model → ``T5Tokenizer(vocab=[(piece, score), ...], extra_ids=20)``;
  ``<pad>`` = 0 = ``decoder_start_token_id``, ``</s>`` = 1, ``<unk>`` = 2, the ``<extra_id_N>`` sentinels
  last.
* ``bart-tiny``: a byte-level BPE trained with ``tokenizers`` → ``BartTokenizer(vocab=dict, merges=list)``
  (saved as ``RobertaTokenizer``, which ``BartTokenizer`` is in transformers 5); ``<s>`` = 0, ``<pad>`` = 1,
  ``</s>`` = 2, ``<unk>`` = 3, ``<mask>`` = 4.
* ``mbart-tiny``: a sentencepiece unigram model → ``MBart50Tokenizer``, which always adds the 52 mBART-50
  language codes (``en_XX``, ``de_DE``, ...). Inputs are ``[src_lang] tokens </s>``, labels
  ``[tgt_lang] tokens </s>``; generation starts from ``</s>`` and takes the target code as
  ``forced_bos_token_id=tokenizer.convert_tokens_to_ids(tgt_lang)``.
* ``marian-tiny``: a sentencepiece unigram model shared by source and target → ``MarianTokenizer`` files
  ``source.spm``, ``target.spm``, ``vocab.json`` (``</s>`` = 0, ``<unk>`` = 1, ``<pad>`` last); a Python
  tokenizer, not a ``tokenizers`` one.

Building is deterministic: the same texts, ``vocab_size`` and ``seed`` give the same vocabulary and weights.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from job.errors import UserError

BUILTIN_PREFIX = "builtin:"

BUILTIN_MODELS: dict[str, str] = {
    "t5-tiny": "T5 (relative positions), sentencepiece unigram tokenizer with 20 <extra_id_N> sentinels",
    "bart-tiny": "BART (512 learned positions), byte-level BPE tokenizer",
    "mbart-tiny": "mBART (512 learned positions), MBart50Tokenizer with the 52 mBART-50 language codes",
    "marian-tiny": "Marian (sinusoidal positions), MarianTokenizer, one sentencepiece model for both sides",
}

# The language codes MBart50Tokenizer always adds (FAIRSEQ_LANGUAGE_CODES in transformers' mbart50 module).
MBART50_LANGUAGE_CODES: tuple[str, ...] = (
    "ar_AR",
    "cs_CZ",
    "de_DE",
    "en_XX",
    "es_XX",
    "et_EE",
    "fi_FI",
    "fr_XX",
    "gu_IN",
    "hi_IN",
    "it_IT",
    "ja_XX",
    "kk_KZ",
    "ko_KR",
    "lt_LT",
    "lv_LV",
    "my_MM",
    "ne_NP",
    "nl_XX",
    "ro_RO",
    "ru_RU",
    "si_LK",
    "tr_TR",
    "vi_VN",
    "zh_CN",
    "af_ZA",
    "az_AZ",
    "bn_IN",
    "fa_IR",
    "he_IL",
    "hr_HR",
    "id_ID",
    "ka_GE",
    "km_KH",
    "mk_MK",
    "ml_IN",
    "mn_MN",
    "mr_IN",
    "pl_PL",
    "ps_AF",
    "pt_XX",
    "sv_SE",
    "sw_KE",
    "ta_IN",
    "te_IN",
    "th_TH",
    "tl_XX",
    "uk_UA",
    "ur_PK",
    "xh_ZA",
    "gl_ES",
    "sl_SI",
)

# Architecture of every builtin model.
_D_MODEL = 64
_LAYERS = 2
_HEADS = 4
_FFN = 128
_MAX_POSITIONS = 512
_T5_EXTRA_IDS = 20
# Tokenizer training input: texts are split into lines, and lines into chunks of at most this many words
# (sentencepiece silently skips "sentences" longer than max_sentence_length bytes); at most _MAX_CHUNKS
# chunks, sampled with the seed, keep training on a large data set quick.
_CHUNK_WORDS = 128
_MAX_CHUNKS = 200_000
_SPM_MAX_SENTENCE_BYTES = 1 << 16


def is_builtin(model: str) -> bool:
    """Whether ``model`` names a builtin model (``"builtin:<name>"``) rather than a Hub id or a local path."""
    return model.startswith(BUILTIN_PREFIX)


def build_builtin_model(
    name: str,
    *,
    texts: Iterable[str],
    out_dir: Path,
    vocab_size: int = 2000,
    seed: int = 42,
    languages: Sequence[str] = (),
) -> Path:
    """Train a tokenizer on ``texts``, build a random tiny model and save both to ``out_dir``.

    Args:
        name: A key of :data:`BUILTIN_MODELS`, with or without the ``"builtin:"`` prefix.
        texts: Text to train the tokenizer on (e.g. the sources and targets of the training set). Read once.
        out_dir: Folder to write to (created if missing; files of the same names are overwritten).
        vocab_size: Upper bound on the learned vocabulary; a small text gets fewer pieces. Special tokens
            (T5 sentinels, mBART language codes) come on top. Raised if the text has more distinct characters.
        seed: Seeds the weights (``torch.manual_seed``, without disturbing the caller's RNG state) and the
            sampling of tokenizer training text when there is a lot of it.
        languages: ``mbart-tiny``: mBART-50 codes; the first is the tokenizer's default ``src_lang`` and the
            second (or the first, if only one) its ``tgt_lang``; none means ``en_XX`` → ``en_XX``.
            ``marian-tiny``: each code ``xx`` adds a ``>>xx<<`` target-language token, as multilingual
            Marian models have. Ignored by ``t5-tiny`` and ``bart-tiny``.

    Returns:
        ``out_dir``, which loads with ``AutoTokenizer`` and ``AutoModelForSeq2SeqLM.from_pretrained``.

    Raises:
        UserError: unknown ``name``, no text, a bad ``vocab_size`` or an unknown language code.
    """
    key = name.strip()
    key = key[len(BUILTIN_PREFIX) :] if key.startswith(BUILTIN_PREFIX) else key
    if key not in BUILTIN_MODELS:
        valid = ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_MODELS)
        raise UserError(f"unknown builtin model {name!r}; valid names: {valid}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise UserError(f"builtin model vocab_size must be a positive integer, got {vocab_size!r}")
    chunks = _training_chunks(texts, seed=seed)
    if not chunks:
        raise UserError(f"cannot build {BUILTIN_PREFIX}{key}: no text to train its tokenizer on (all empty)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    codes = (languages,) if isinstance(languages, str) else tuple(languages)
    _BUILDERS[key](chunks=chunks, out_dir=out_dir, vocab_size=vocab_size, seed=seed, languages=codes)
    return out_dir


# --------------------------------------------------------------------------------------------------- helpers


def _training_chunks(texts: Iterable[str], *, seed: int) -> list[str]:
    """Lines of ``texts`` cut into chunks of at most ``_CHUNK_WORDS`` words; a seeded sample if too many."""
    chunks: list[str] = []
    for text in texts:
        for line in str(text).splitlines():
            words = line.split()
            for start in range(0, len(words), _CHUNK_WORDS):
                chunks.append(" ".join(words[start : start + _CHUNK_WORDS]))
    if len(chunks) > _MAX_CHUNKS:
        keep = sorted(random.Random(seed).sample(range(len(chunks)), _MAX_CHUNKS))
        chunks = [chunks[i] for i in keep]
    return chunks


def _train_sentencepiece(chunks: list[str], *, vocab_size: int, ids: dict[str, int]) -> Any:
    """Train a sentencepiece unigram model; returns its ``ModelProto`` (pieces, scores, normalizer)."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    n_control = sum(1 for v in ids.values() if v >= 0)
    # sentencepiece refuses a vocabulary smaller than the characters it must cover; give it room for all.
    n_chars = len({c for chunk in chunks for c in chunk if not c.isspace()})
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(chunks),
        model_writer=buffer,
        model_type="unigram",
        vocab_size=max(vocab_size, n_chars + n_control + 1),
        hard_vocab_limit=False,  # small text → fewer pieces instead of "Vocabulary size too high"
        max_sentence_length=_SPM_MAX_SENTENCE_BYTES,
        num_threads=1,  # deterministic EM sums
        minloglevel=2,
        **ids,
    )
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(buffer.getvalue())
    return proto


def _seeded_model(model_class: Any, config: Any, seed: int) -> Any:
    """``model_class(config)`` initialised after ``torch.manual_seed(seed)``; the global RNG is restored."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    return model.eval()


def _save(model: Any, tokenizer: Any, out_dir: Path) -> None:
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


# ---------------------------------------------------------------------------------------------------- models


def _build_t5(*, chunks: list[str], out_dir: Path, vocab_size: int, seed: int, languages: tuple[str, ...]) -> None:
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    spm_ids = {"pad_id": 0, "eos_id": 1, "unk_id": 2, "bos_id": -1}
    proto = _train_sentencepiece(chunks, vocab_size=vocab_size, ids=spm_ids)
    sentinels = [f"<extra_id_{i}>" for i in range(_T5_EXTRA_IDS)]
    vocab = [(p.piece, p.score) for p in proto.pieces if p.piece not in sentinels]
    vocab += [(s, 0.0) for s in reversed(sentinels)]  # as in Google's T5 vocabularies: <extra_id_0> last
    tokenizer = T5Tokenizer(
        vocab=vocab,
        extra_ids=_T5_EXTRA_IDS,
        _spm_precompiled_charsmap=proto.normalizer_spec.precompiled_charsmap or None,
        model_max_length=_MAX_POSITIONS,
    )
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=_D_MODEL,
        d_kv=_D_MODEL // _HEADS,
        d_ff=_FFN,
        num_layers=_LAYERS,
        num_decoder_layers=_LAYERS,
        num_heads=_HEADS,
        feed_forward_proj="relu",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,  # T5Config in transformers 5 has no default for it
        tie_word_embeddings=True,
    )
    _save(_seeded_model(T5ForConditionalGeneration, config, seed), tokenizer, out_dir)


def _build_bart(*, chunks: list[str], out_dir: Path, vocab_size: int, seed: int, languages: tuple[str, ...]) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import BartConfig, BartForConditionalGeneration, BartTokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # as RobertaTokenizer rebuilds it
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size, len(alphabet) + len(specials)),
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    bpe.train_from_iterator(chunks, trainer=trainer)
    trained = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    # transformers 5: vocab=/merges= (vocab_file=/merges_file= are silently ignored → a 5-token vocabulary).
    tokenizer = BartTokenizer(vocab=trained["vocab"], merges=merges, model_max_length=_MAX_POSITIONS)
    config = BartConfig(
        vocab_size=len(tokenizer),
        **_bart_family_dims(),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        forced_eos_token_id=tokenizer.eos_token_id,
    )
    _save(_seeded_model(BartForConditionalGeneration, config, seed), tokenizer, out_dir)


def _build_mbart(*, chunks: list[str], out_dir: Path, vocab_size: int, seed: int, languages: tuple[str, ...]) -> None:
    from transformers import MBart50Tokenizer, MBartConfig, MBartForConditionalGeneration

    unknown = [code for code in languages if code not in MBART50_LANGUAGE_CODES]
    if unknown:
        raise UserError(
            f"{BUILTIN_PREFIX}mbart-tiny: unknown language code(s) {', '.join(map(repr, unknown))};"
            f" use mBART-50 codes such as {', '.join(MBART50_LANGUAGE_CODES[:8])}, ... (52 in all)"
        )
    src_lang = languages[0] if languages else "en_XX"
    tgt_lang = languages[1] if len(languages) > 1 else src_lang
    # Sentencepiece's own order <unk>=0, <s>=1, </s>=2: MBart50Tokenizer drops those three, puts <s>, <pad>,
    # </s>, <unk> in front (fairseq order) and appends the 52 language codes and <mask>.
    spm_ids = {"unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": -1}
    proto = _train_sentencepiece(chunks, vocab_size=vocab_size, ids=spm_ids)
    reserved = {"<pad>", "<mask>", *MBART50_LANGUAGE_CODES}
    pieces = [(p.piece, p.score) for p in proto.pieces]
    vocab = pieces[:3] + [(piece, score) for piece, score in pieces[3:] if piece not in reserved]
    tokenizer = MBart50Tokenizer(
        vocab=vocab,
        _spm_precompiled_charsmap=proto.normalizer_spec.precompiled_charsmap or None,
        src_lang=src_lang,
        tgt_lang=tgt_lang,
        model_max_length=_MAX_POSITIONS,
    )
    config = MBartConfig(
        vocab_size=len(tokenizer),
        **_bart_family_dims(),
        scale_embedding=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,  # mBART-50: </s> then the forced target language code
        forced_eos_token_id=tokenizer.eos_token_id,
    )
    _save(_seeded_model(MBartForConditionalGeneration, config, seed), tokenizer, out_dir)


def _build_marian(*, chunks: list[str], out_dir: Path, vocab_size: int, seed: int, languages: tuple[str, ...]) -> None:
    import warnings

    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    bad = [code for code in languages if not code or not all(c.isalnum() or c in "_-" for c in code)]
    if bad:
        codes = ", ".join(map(repr, bad))
        raise UserError(f"{BUILTIN_PREFIX}marian-tiny: bad language code(s) {codes}; use codes such as 'de'")
    spm_ids = {"eos_id": 0, "unk_id": 1, "bos_id": -1, "pad_id": -1}
    proto = _train_sentencepiece(chunks, vocab_size=vocab_size, ids=spm_ids)
    vocab: dict[str, int] = {}
    for piece in [p.piece for p in proto.pieces] + [f">>{code}<<" for code in languages] + ["<pad>"]:
        vocab.setdefault(piece, len(vocab))
    spm_bytes = proto.SerializeToString()
    for file_name in ("source.spm", "target.spm"):
        (out_dir / file_name).write_bytes(spm_bytes)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=2), encoding="utf-8")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Recommended: pip install sacremoses")
        tokenizer = MarianTokenizer(
            source_spm=str(out_dir / "source.spm"),
            target_spm=str(out_dir / "target.spm"),
            vocab=str(out_dir / "vocab.json"),
            model_max_length=_MAX_POSITIONS,
        )
    config = MarianConfig(
        vocab_size=len(vocab),
        decoder_vocab_size=len(vocab),
        **_bart_family_dims(),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,  # Marian starts decoding from <pad>
        forced_eos_token_id=tokenizer.eos_token_id,
        share_encoder_decoder_embeddings=True,
    )
    _save(_seeded_model(MarianMTModel, config, seed), tokenizer, out_dir)


def _bart_family_dims() -> dict[str, int]:
    """Sizes shared by the BART, mBART and Marian configs."""
    return {
        "d_model": _D_MODEL,
        "encoder_layers": _LAYERS,
        "decoder_layers": _LAYERS,
        "encoder_attention_heads": _HEADS,
        "decoder_attention_heads": _HEADS,
        "encoder_ffn_dim": _FFN,
        "decoder_ffn_dim": _FFN,
        "max_position_embeddings": _MAX_POSITIONS,
    }


_BUILDERS: dict[str, Callable[..., None]] = {
    "t5-tiny": _build_t5,
    "bart-tiny": _build_bart,
    "mbart-tiny": _build_mbart,
    "marian-tiny": _build_marian,
}
