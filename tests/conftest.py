"""Shared pytest fixtures."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

# ---------------------------------------------------------------------------------------------------------
# Tiny local models (job.builtin_models), built once per test session from synthetic sentences. Other tests
# load them by path: AutoTokenizer.from_pretrained(tiny_t5_dir), AutoModelForSeq2SeqLM.from_pretrained(...).
# Each is a random d_model-64, 2+2-layer model (~0.2M parameters) with a tokenizer trained on
# TINY_MODEL_SENTENCES, so sentences made of TINY_MODEL_WORDS encode without <unk>.
# ---------------------------------------------------------------------------------------------------------

TINY_MODEL_WORDS = [
    "the",
    "a",
    "one",
    "two",
    "three",
    "big",
    "small",
    "red",
    "blue",
    "green",
    "old",
    "new",
    "happy",
    "quiet",
    "cat",
    "dog",
    "bird",
    "fish",
    "horse",
    "tree",
    "house",
    "river",
    "garden",
    "city",
    "sun",
    "moon",
    "boat",
    "car",
    "book",
    "ran",
    "sat",
    "jumped",
    "saw",
    "found",
    "likes",
    "sees",
    "reads",
    "near",
    "over",
    "under",
    "behind",
    "with",
    "quickly",
    "slowly",
    "today",
    "yesterday",
    "and",
]


def _tiny_model_sentences(count: int = 200, seed: int = 0) -> list[str]:
    """``count`` short sentences of 4-12 words from ``TINY_MODEL_WORDS``, the same on every run."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(TINY_MODEL_WORDS) for _ in range(rng.randint(4, 12))) for _ in range(count)]


TINY_MODEL_SENTENCES = _tiny_model_sentences()


def _build_tiny(name: str, factory: pytest.TempPathFactory, **kwargs: object) -> Path:
    from job.builtin_models import build_builtin_model

    out_dir = factory.mktemp(name.replace("-", "_"))
    return build_builtin_model(name, texts=TINY_MODEL_SENTENCES, out_dir=out_dir, seed=0, **kwargs)


@pytest.fixture(scope="session")
def tiny_model_sentences() -> list[str]:
    """The sentences the tiny models' tokenizers were trained on (a fresh copy)."""
    return list(TINY_MODEL_SENTENCES)


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny random T5 (T5Tokenizer, unigram, <pad>=0=decoder start, </s>=1, 20 sentinels)."""
    return _build_tiny("t5-tiny", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_bart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny random BART (byte-level BPE saved as RobertaTokenizer; <s>=0, <pad>=1, </s>=2)."""
    return _build_tiny("bart-tiny", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_mbart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny random mBART; its MBart50Tokenizer defaults to src_lang en_XX, tgt_lang de_DE."""
    return _build_tiny("mbart-tiny", tmp_path_factory, languages=("en_XX", "de_DE"))


@pytest.fixture(scope="session")
def tiny_marian_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny random Marian (MarianTokenizer, a Python one: source.spm, target.spm, vocab.json)."""
    return _build_tiny("marian-tiny", tmp_path_factory)


# --------------------------------------------------------------------------------------- end of tiny models


# ---------------------------------------------------------------------------------------------------------
# A learnable task and helpers for end-to-end runs.
# ---------------------------------------------------------------------------------------------------------


KEYWORDS = {"red", "blue", "green", "cat", "dog", "bird", "fish", "horse"}


def write_task(folder: Path, *, kind: str, train_rows: int = 400, valid_rows: int = 40, seed: int = 1) -> Path:
    """train.csv / validation.csv of a task the tiny models learn in a few epochs.

    ``keywords``: the target is the text's colour/animal words in order (T5 learns it: ROUGE-1 ~20 → ~90).
    ``first_words``: the target is the text's first two words (BART learns it: ROUGE-1 ~5 → ~100).
    """
    import csv

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train_rows), ("validation", valid_rows)):
        with (folder / f"{split}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "target"])
            for _ in range(rows):
                if kind == "keywords":
                    words = [rng.choice(TINY_MODEL_WORDS) for _ in range(rng.randint(5, 12))]
                    target = [w for w in words if w in KEYWORDS] or ["none"]
                else:
                    words = [rng.choice(TINY_MODEL_WORDS) for _ in range(rng.randint(3, 8))]
                    target = words[:2]
                writer.writerow([" ".join(words), " ".join(target)])
    return folder


@pytest.fixture(scope="session")
def keywords_task_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_task(tmp_path_factory.mktemp("keywords_task"), kind="keywords")


@pytest.fixture(scope="session")
def first_words_task_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_task(tmp_path_factory.mktemp("first_words_task"), kind="first_words")


@pytest.fixture(autouse=True)
def _no_job_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start without SEQ2SEQ_* variables or launcher ranks from the surrounding shell."""
    import os

    for key in list(os.environ):
        if key.upper().startswith("SEQ2SEQ_") or key in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


# ---------------------------------------------------------------------------------------------------------
# S3 (job.storage, docs/storage.md): one real moto_server process on 127.0.0.1 per session (tests/s3_server.py);
# code under test reaches it over HTTP with real boto3. `s3_env` points boto3 at it (AWS_ENDPOINT_URL_S3, dummy
# credentials, no profiles or instance metadata); `s3_bucket` is a fresh, empty bucket for one test.
# ---------------------------------------------------------------------------------------------------------
S3_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-canary",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_MAX_ATTEMPTS": "3",
}


@pytest.fixture(scope="session")
def s3_server():
    """A running moto S3 server: ``.endpoint_url``, ``.port``; stopped at the end of the session."""
    from s3_server import MotoServer

    server = MotoServer(env=S3_TEST_ENV).start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The environment of a job that reaches ``s3_server`` through boto3's own endpoint and credential chain."""
    from job import storage

    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {**S3_TEST_ENV, "AWS_ENDPOINT_URL_S3": s3_server.endpoint_url}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    storage.configure(storage.StorageSettings(s3_endpoint_url=None))
    return s3_server


@pytest.fixture
def s3_bucket(s3_env, request: pytest.FixtureRequest) -> str:
    """A new empty bucket on ``s3_server`` (name derived from the test)."""
    import re
    import uuid

    import boto3

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:8]
    boto3.client("s3", endpoint_url=s3_env.endpoint_url).create_bucket(Bucket=name)
    return name


@pytest.fixture(autouse=True)
def _no_signal_left_behind() -> object:
    """A signal one test sent (job.stopping records it) must not stop the next test's training."""
    yield
    import sys

    stopping = sys.modules.get("job.stopping")
    if stopping is not None:
        stopping.state.reset()
