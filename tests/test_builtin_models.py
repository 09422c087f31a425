"""Tests of job.builtin_models: tiny random encoder-decoders with tokenizers trained on the spot."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

from job.builtin_models import (
    BUILTIN_MODELS,
    BUILTIN_PREFIX,
    MBART50_LANGUAGE_CODES,
    build_builtin_model,
    is_builtin,
)
from job.errors import UserError

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")  # MarianTokenizer

NAMES = list(BUILTIN_MODELS)
WORDS = [
    "the",
    "a",
    "big",
    "small",
    "red",
    "blue",
    "old",
    "cat",
    "dog",
    "bird",
    "house",
    "tree",
    "river",
    "ran",
    "sat",
    "jumped",
    "saw",
    "over",
    "under",
    "near",
    "and",
]
SENTENCE = "the small cat jumped over the red house near a big tree"
# What AutoTokenizer / AutoModelForSeq2SeqLM give back; BartTokenizer *is* RobertaTokenizer in transformers 5.
EXPECTED = {
    "t5-tiny": ("T5Tokenizer", "T5ForConditionalGeneration"),
    "bart-tiny": ("RobertaTokenizer", "BartForConditionalGeneration"),
    "mbart-tiny": ("MBart50Tokenizer", "MBartForConditionalGeneration"),
    "marian-tiny": ("MarianTokenizer", "MarianMTModel"),
}


def _sentences(count: int = 100, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) for _ in range(count)]


TEXTS = _sentences()


def _build(name: str, out_dir: Path, **kwargs: object) -> Path:
    if name == "mbart-tiny":
        kwargs.setdefault("languages", ("en_XX", "de_DE"))
    return build_builtin_model(name, texts=TEXTS, out_dir=out_dir, **kwargs)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {name: _build(name, tmp_path_factory.mktemp(name)) for name in NAMES}


@pytest.fixture(scope="module")
def loaded(built: dict[str, Path]) -> dict[str, tuple]:
    return {
        name: (AutoTokenizer.from_pretrained(d), AutoModelForSeq2SeqLM.from_pretrained(d).eval())
        for name, d in built.items()
    }


def test_names_and_prefix() -> None:
    assert set(NAMES) == {"t5-tiny", "bart-tiny", "mbart-tiny", "marian-tiny"}
    assert all(isinstance(desc, str) and desc and "\n" not in desc for desc in BUILTIN_MODELS.values())
    assert is_builtin("builtin:t5-tiny") and is_builtin(BUILTIN_PREFIX + "anything")
    assert not is_builtin("t5-tiny") and not is_builtin("google/flan-t5-small")
    assert not is_builtin("./builtin:x")


def test_mbart50_codes_match_transformers() -> None:
    from transformers.models.mbart50.tokenization_mbart50 import FAIRSEQ_LANGUAGE_CODES

    assert list(MBART50_LANGUAGE_CODES) == list(FAIRSEQ_LANGUAGE_CODES)


@pytest.mark.parametrize("name", NAMES)
def test_reloads_with_auto_classes(name: str, built: dict[str, Path], loaded: dict[str, tuple]) -> None:
    tokenizer, model = loaded[name]
    assert (type(tokenizer).__name__, type(model).__name__) == EXPECTED[name]
    assert (built[name] / "model.safetensors").is_file()
    assert not (built[name] / "pytorch_model.bin").exists()
    config = AutoConfig.from_pretrained(built[name])
    assert config.is_encoder_decoder
    assert config.d_model == 64
    assert config.vocab_size == len(tokenizer) == model.get_input_embeddings().num_embeddings
    assert config.pad_token_id == tokenizer.pad_token_id is not None
    assert config.eos_token_id == tokenizer.eos_token_id is not None
    assert config.decoder_start_token_id is not None
    assert tokenizer.model_max_length == 512
    # not the transformers-5 trap of a 5-token vocabulary that encodes everything as specials
    assert len(tokenizer) > 25


@pytest.mark.parametrize("name", NAMES)
def test_tokenizer_round_trips(name: str, loaded: dict[str, tuple]) -> None:
    tokenizer, _ = loaded[name]
    ids = tokenizer(SENTENCE).input_ids
    assert tokenizer.unk_token_id not in ids
    assert len([i for i in ids if i not in tokenizer.all_special_ids]) >= len(SENTENCE.split())
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True).split() == SENTENCE.split()
    batch = tokenizer(TEXTS[:8], padding=True)
    decoded = tokenizer.batch_decode(batch.input_ids, skip_special_tokens=True)
    assert [d.split() for d in decoded] == [t.split() for t in TEXTS[:8]]


@pytest.mark.parametrize("name", NAMES)
def test_forward_with_labels_and_generate(name: str, loaded: dict[str, tuple]) -> None:
    tokenizer, model = loaded[name]
    batch = tokenizer(TEXTS[:4], text_target=TEXTS[4:8], padding=True, return_tensors="pt")
    batch["labels"][batch["labels"] == tokenizer.pad_token_id] = -100
    with torch.no_grad():
        loss = model(**batch).loss
    assert torch.isfinite(loss) and loss.item() > 0
    inputs = tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out.dtype == torch.long and out.shape[0] == 2 and 2 <= out.shape[1] <= 7
    assert (out[:, 0] == model.config.decoder_start_token_id).all()
    assert out.max().item() < len(tokenizer)
    assert all(isinstance(text, str) for text in tokenizer.batch_decode(out, skip_special_tokens=True))


@pytest.mark.parametrize("name", NAMES)
def test_tiny_parameter_count(name: str, loaded: dict[str, tuple]) -> None:
    _, model = loaded[name]
    assert 50_000 < model.num_parameters() < 2_000_000


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_model_other_seed_other_weights(name: str, tmp_path: Path) -> None:
    first = _build(BUILTIN_PREFIX + name, tmp_path / "a", seed=7)  # the prefix is optional
    second = _build(name, tmp_path / "b", seed=7)
    other = _build(name, tmp_path / "c", seed=8)
    tok_a, tok_b = AutoTokenizer.from_pretrained(first), AutoTokenizer.from_pretrained(second)
    assert tok_a.get_vocab() == tok_b.get_vocab()
    state_a = AutoModelForSeq2SeqLM.from_pretrained(first).state_dict()
    state_b = AutoModelForSeq2SeqLM.from_pretrained(second).state_dict()
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    state_c = AutoModelForSeq2SeqLM.from_pretrained(other).state_dict()
    assert not all(torch.equal(state_a[k], state_c[k]) for k in state_a)
    assert AutoTokenizer.from_pretrained(other).get_vocab() == tok_a.get_vocab()  # seed: weights only


@pytest.mark.parametrize("name", NAMES)
def test_vocab_shrinks_to_small_text(name: str, tmp_path: Path) -> None:
    out = build_builtin_model(name, texts=["the cat sat", "", "a dog ran"], out_dir=tmp_path, vocab_size=5000)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) < 400  # byte-level BPE keeps its 256-byte alphabet
    assert tokenizer.decode(tokenizer("a cat ran").input_ids, skip_special_tokens=True) == "a cat ran"


def test_build_leaves_global_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_builtin_model("bart-tiny", texts=TEXTS, out_dir=tmp_path, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_unknown_name_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        build_builtin_model("builtin:gpt-tiny", texts=TEXTS, out_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message and "gpt-tiny" in message
    assert all(BUILTIN_PREFIX + name in message for name in NAMES)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("texts", [[], ["", "  \n "]])
def test_no_text_is_a_user_error(texts: list[str], tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no text"):
        build_builtin_model("t5-tiny", texts=texts, out_dir=tmp_path)


def test_bad_vocab_size_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="vocab_size"):
        build_builtin_model("t5-tiny", texts=TEXTS, out_dir=tmp_path, vocab_size=0)


def test_t5_conventions(loaded: dict[str, tuple], built: dict[str, Path]) -> None:
    tokenizer, model = loaded["t5-tiny"]
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert model.config.decoder_start_token_id == 0
    sentinels = [f"<extra_id_{i}>" for i in range(20)]
    assert set(sentinels) <= set(tokenizer.all_special_tokens)
    assert tokenizer.convert_tokens_to_ids("<extra_id_0>") == len(tokenizer) - 1
    ids = tokenizer("the cat <extra_id_0> the dog").input_ids
    assert tokenizer.convert_tokens_to_ids("<extra_id_0>") in ids
    saved = json.loads((built["t5-tiny"] / "tokenizer_config.json").read_text())
    assert saved["tokenizer_class"] == "T5Tokenizer"


def test_bart_conventions(loaded: dict[str, tuple]) -> None:
    tokenizer, model = loaded["bart-tiny"]
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    assert tokenizer.convert_tokens_to_ids(special) == [0, 1, 2, 3, 4]
    assert tokenizer(SENTENCE).input_ids[0] == tokenizer.bos_token_id == 0
    assert model.config.decoder_start_token_id == model.config.eos_token_id == 2
    assert model.config.max_position_embeddings == 512


def test_mbart_language_codes(loaded: dict[str, tuple], built: dict[str, Path]) -> None:
    tokenizer, model = loaded["mbart-tiny"]
    assert (tokenizer.src_lang, tokenizer.tgt_lang) == ("en_XX", "de_DE")  # from languages=, kept on reload
    en, de, ro = tokenizer.convert_tokens_to_ids(["en_XX", "de_DE", "ro_RO"])
    assert {en, de, ro} <= set(tokenizer.all_special_ids)
    assert len({en, de, ro, tokenizer.unk_token_id}) == 4
    batch = tokenizer(SENTENCE, text_target="the dog sat")
    assert batch.input_ids[0] == en and batch.input_ids[-1] == tokenizer.eos_token_id
    assert batch.labels[0] == de and batch.labels[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(batch.input_ids, skip_special_tokens=True) == SENTENCE

    other = AutoTokenizer.from_pretrained(built["mbart-tiny"])
    other.src_lang, other.tgt_lang = "ro_RO", "en_XX"
    batch = other(SENTENCE, text_target="the dog sat")
    assert (batch.input_ids[0], batch.labels[0]) == (ro, en)
    assert AutoTokenizer.from_pretrained(built["mbart-tiny"], src_lang="de_DE")(SENTENCE).input_ids[0] == de

    assert model.config.decoder_start_token_id == tokenizer.eos_token_id
    inputs = tokenizer([SENTENCE], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, forced_bos_token_id=de, max_new_tokens=4)
    assert out[0, :2].tolist() == [tokenizer.eos_token_id, de]


def test_mbart_languages_must_be_mbart50_codes(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="'en'"):
        build_builtin_model("mbart-tiny", texts=TEXTS, out_dir=tmp_path, languages=["en", "de_DE"])
    out = build_builtin_model("mbart-tiny", texts=TEXTS, out_dir=tmp_path, languages=["fr_XX"])
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert (tokenizer.src_lang, tokenizer.tgt_lang) == ("fr_XX", "fr_XX")


def test_marian_files_and_target_language_tokens(tmp_path: Path) -> None:
    out = build_builtin_model("marian-tiny", texts=TEXTS, out_dir=tmp_path, languages=["de", "fr"])
    assert {"source.spm", "target.spm", "vocab.json"} <= {p.name for p in out.iterdir()}
    tokenizer = AutoTokenizer.from_pretrained(out)
    vocab = json.loads((out / "vocab.json").read_text())
    assert (vocab["</s>"], vocab["<unk>"]) == (0, 1) and vocab["<pad>"] == len(vocab) - 1
    assert tokenizer(">>fr<< the cat").input_ids[0] == vocab[">>fr<<"]
    model = AutoModelForSeq2SeqLM.from_pretrained(out)
    assert model.config.decoder_start_token_id == model.config.pad_token_id == vocab["<pad>"]


@pytest.mark.parametrize("fixture", ["tiny_t5_dir", "tiny_bart_dir", "tiny_mbart_dir", "tiny_marian_dir"])
def test_conftest_tiny_model_fixtures(
    fixture: str, request: pytest.FixtureRequest, tiny_model_sentences: list[str]
) -> None:
    folder = request.getfixturevalue(fixture)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSeq2SeqLM.from_pretrained(folder)
    sentence = tiny_model_sentences[0]
    assert tokenizer.decode(tokenizer(sentence).input_ids, skip_special_tokens=True) == sentence
    assert model.num_parameters() < 2_000_000
