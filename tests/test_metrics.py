"""Metrics for every task and script: equal to rouge_score / sacrebleu on English, hand-checked elsewhere."""

from __future__ import annotations

import random
import string
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer, tokenizers

from job.metric_sets import (
    METRICS,
    ROUGE_TYPES,
    TASK_METRICS,
    best_metric_names,
    check_metrics,
    default_metrics,
    greater_is_better,
    metric_names,
)
from job.metrics import (
    UnicodeTokenizer,
    bleu_tokenizer,
    build_compute_metrics,
    dominant_script,
    exact_match,
    language_subtags,
    normalize_answer,
    rouge,
    score,
    split_sentences,
)

PREDS = [
    "The cat sat on the mat. It was happy.",
    "red fox jumped river monday",
    "Completely unrelated words here!",
    "",
]
REFS = [
    "A cat was sitting on the mat. The cat seemed happy. Dr. Smith agreed.",
    "red fox jumped over river on monday",
    "Nothing in common at all.",
    "empty prediction reference",
]
ALL_NAMES = ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "chrf", "chrfpp", "exact_match")


# ------------------------------------------------------------------------------------------- English = references
def _english_like(rng: random.Random) -> str:
    words = [
        "running",
        "cats",
        "The",
        "happily",
        "generalization",
        "U.S.",
        "don't",
        "e-mail",
        "3.14",
        "x_y",
        "ABC123",
        "agreed",
        "was",
        "sitting",
        "is",
        "it's",
        "#tag",
        "a+b",
        "(note)",
        "CONNECTED",
        "fly",
        "flies",
        "caresses",
        "ponies",
    ]
    pieces = []
    for _ in range(rng.randint(0, 25)):
        if rng.random() < 0.6:
            pieces.append(rng.choice(words))
        else:
            pieces.append("".join(rng.choice(string.printable) for _ in range(rng.randint(1, 8))))
        pieces.append(rng.choice([" ", " ", "  ", "\n", ", ", ". ", "\t"]))
    return "".join(pieces)


@pytest.mark.parametrize("use_stemmer", [True, False])
def test_unicode_tokenizer_equals_rouge_score_on_ascii(use_stemmer: bool) -> None:
    rng = random.Random(11)
    texts = [_english_like(rng) for _ in range(300)]
    ours, theirs = UnicodeTokenizer(use_stemmer), tokenizers.DefaultTokenizer(use_stemmer)
    assert sum(len(theirs.tokenize(t)) for t in texts) > 3000  # the comparison has substance
    for text in texts:
        assert ours.tokenize(text) == theirs.tokenize(text), text
    # ... and so the scores: our rouge() equals rouge_score's own scorer pair by pair.
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
    for pred, ref in zip(texts[::2], texts[1::2], strict=True):
        expected = scorer.score("\n".join(split_sentences(ref)), "\n".join(split_sentences(pred)))
        got = rouge([pred], [ref], use_stemmer=use_stemmer)
        for name in ROUGE_TYPES:
            assert got[name] == pytest.approx(100 * expected[name].fmeasure, abs=1e-9), (name, pred, ref)


def test_rouge_matches_rouge_score_scorer_averaged() -> None:
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    expected = dict.fromkeys(ROUGE_TYPES, 0.0)
    for pred, ref in zip(PREDS, REFS, strict=True):
        scores = scorer.score("\n".join(split_sentences(ref)), "\n".join(split_sentences(pred)))
        for t in ROUGE_TYPES:
            expected[t] += 100 * scores[t].fmeasure / len(PREDS)
    ours = score(PREDS, REFS, metrics=["rouge"])
    assert set(ours) == set(ROUGE_TYPES)
    for t in ROUGE_TYPES:
        assert ours[t] == pytest.approx(expected[t], abs=1e-4)
    assert 0 < ours["rouge2"] < ours["rouge1"] < 100


def test_bleu_chrf_equal_sacrebleu_corpus_scores_on_english() -> None:
    preds = ["The cat sat on the mat today.", "A quick brown fox jumps over the dog.", "It rains in Paris, again!"]
    refs = [
        "The cat was sitting on the mat today.",
        "The quick brown fox jumped over the lazy dog.",
        "It rains in Paris.",
    ]
    got = score(preds, refs, metrics=["bleu", "chrf", "chrfpp"], target_lang="en")
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score, abs=1e-4)  # 13a, all orders
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(preds, [refs]).score, abs=1e-4)
    assert got["chrfpp"] == pytest.approx(sacrebleu.corpus_chrf(preds, [refs], word_order=2).score, abs=1e-4)
    assert 0 < got["bleu"] < got["chrf"] < 100 and got["chrfpp"] != got["chrf"]


def test_bleu_uses_the_orders_a_corpus_of_short_answers_has() -> None:
    # No 4-gram anywhere: sacrebleu's corpus default gives ~0 even when every answer is right; we score the orders
    # present (effective order), as sacrebleu's sentence BLEU does.
    preds, refs = ["Paris", "New York", "1969"], ["Paris", "New York", "1969"]
    assert sacrebleu.corpus_bleu(preds, [refs]).score < 1
    assert score(preds, refs, metrics=["bleu"])["bleu"] == 100.0
    wrong = score(["Paris", "Boston", "1969"], refs, metrics=["bleu"])["bleu"]
    expected = sacrebleu.BLEU(effective_order=True).corpus_score(["Paris", "Boston", "1969"], [refs]).score
    assert wrong == pytest.approx(expected, abs=1e-4) and 0 < wrong < 100


# ------------------------------------------------------------------------------------------- other scripts by hand
def test_rouge_cyrillic_by_hand() -> None:
    # pred кошка сидит на ковре / ref кошка спит на ковре: 3 of 4 unigrams shared → P = R = F = 3/4;
    # bigrams: only (на ковре) of 3 → 1/3; LCS кошка-на-ковре = 3 → 3/4.
    got = score(["Кошка сидит на ковре"], ["кошка спит на ковре"], metrics=["rouge"], target_lang="ru")
    assert got == {"rouge1": 75.0, "rouge2": 33.3333, "rougeL": 75.0, "rougeLsum": 75.0}


def test_bleu_cyrillic_by_hand() -> None:
    # 13a tokens, 4 each. p1 = 3/4, p2 = 1/3 (на ковре); p3 = 0/2 and p4 = 0/1 are smoothed ('exp': the k-th zero
    # precision becomes 1 / (2^k · total)): p3 = 1/(2·2) = 1/4, p4 = 1/(4·1) = 1/4. Same length → BP = 1.
    # BLEU = (3/4 · 1/3 · 1/4 · 1/4)^(1/4) = 0.015625^(1/4) = 0.353553.
    got = score(["Кошка сидит на ковре"], ["Кошка спит на ковре"], metrics=["bleu"], target_lang="ru_RU")
    assert got["bleu"] == pytest.approx(35.3553, abs=1e-4)


def test_rouge_greek_by_hand() -> None:
    # pred ο σκύλος τρέχει γρήγορα (4) / ref ο σκύλος τρέχει (3, upper case, final sigma): 3 shared →
    # P = 3/4, R = 1, F = 2·(3/4)/(7/4) = 6/7; bigrams 2 of 3, all 2 of ref → P = 2/3, R = 1, F = 4/5; LCS 3 → 6/7.
    got = score(["ο σκύλος τρέχει γρήγορα"], ["Ο ΣΚΎΛΟΣ ΤΡΈΧΕΙ"], metrics=["rouge"], target_lang="el")
    assert got == {"rouge1": 85.7143, "rouge2": 80.0, "rougeL": 85.7143, "rougeLsum": 85.7143}


def test_rouge_arabic_by_hand() -> None:
    # pred القطة تجلس على السجادة (4) / ref القطة تنام على السجادة الحمراء (5): 3 shared → P = 3/4, R = 3/5,
    # F = 2·0.45/1.35 = 2/3; bigrams: (على السجادة) of 3 and of 4 → P = 1/3, R = 1/4, F = 2/7; LCS 3 → 2/3.
    got = score(["القطة تجلس على السجادة"], ["القطة تنام على السجادة الحمراء"], metrics=["rouge"], target_lang="ar")
    assert got == {"rouge1": 66.6667, "rouge2": 28.5714, "rougeL": 66.6667, "rougeLsum": 66.6667}


def test_chinese_by_hand_rouge_bleu_chrf() -> None:
    # Characters 我 喜 欢 猫 / 我 喜 欢 狗. ROUGE: unigrams 3/4; bigrams 我喜 喜欢 of 3 → 2/3; LCS 3 → 3/4.
    # BLEU (zh tokenizer: one token per Han character): p1 = 3/4, p2 = 2/3, p3 = 1/2 (我喜欢), p4 = 0/1 → 1/(2·1);
    # BP = 1: (3/4 · 2/3 · 1/2 · 1/2)^(1/4) = 0.125^(1/4) = 0.594604.
    # chrF (6 char orders; orders 5 and 6 have no n-grams, so 4 count): precision = recall per order =
    # 3/4, 2/3, 1/2, 0 → mean 0.479167 = F-β whatever β.
    got = score(["我喜欢猫"], ["我喜欢狗"], metrics=["rouge", "bleu", "chrf"], target_lang="zh_CN")
    assert {k: got[k] for k in ROUGE_TYPES} == {"rouge1": 75.0, "rouge2": 66.6667, "rougeL": 75.0, "rougeLsum": 75.0}
    assert got["bleu"] == pytest.approx(59.4604, abs=1e-4)
    assert got["chrf"] == pytest.approx(47.9167, abs=1e-4)
    # rouge_score's own tokenizer finds no token at all; 13a sees one word each — both useless here.
    assert rouge_scorer.RougeScorer(["rouge1"]).score("我喜欢狗", "我喜欢猫")["rouge1"].fmeasure == 0
    assert sacrebleu.corpus_bleu(["我喜欢猫"], [["我喜欢狗"]], tokenize="13a").score < 1


PERFECT = {
    "en": "The quick brown fox jumps over the lazy dog. It was fast!",
    "ru": "Я люблю кошек. Они мягкие и тёплые.",
    "el": "Καλημέρα κόσμε, πώς είσαι σήμερα;",
    "ar": "مرحبا بالعالم، كيف حالك اليوم؟",
    "he": "שלום עולם, מה שלומך היום?",
    "hi": "नमस्ते दुनिया। आज आप कैसे हैं?",
    "zh": "我喜欢猫。它们很可爱！",
    "ja": "東京は日本の首都です。コーヒーを飲みます。",
    "ko": "안녕하세요 세계. 오늘 어떻게 지내세요?",
    "th": "สวัสดีครับ วันนี้อากาศดีมาก",
    "de": "Grüße aus München: Straße, Öl und Äpfel.",
}


@pytest.mark.parametrize("lang", sorted(PERFECT))
@pytest.mark.parametrize("with_lang", [True, False])
def test_perfect_predictions_score_100_in_every_script(lang: str, with_lang: bool) -> None:
    text = PERFECT[lang]
    got = score([text], [text], metrics=METRICS, target_lang=lang if with_lang else None)
    assert got == dict.fromkeys(ALL_NAMES, 100.0)
    # and the same text against an unrelated one of the same script is far from 100
    other = score([text], ["0"], metrics=["rouge", "chrf"], target_lang=lang if with_lang else None)
    assert max(other.values()) < 30


# ------------------------------------------------------------------------------------------------ tokenization
def test_unicode_tokenizer_by_script() -> None:
    tok = UnicodeTokenizer(use_stemmer=True)
    assert tok.tokenize("Я Люблю КОШЕК!") == ["я", "люблю", "кошек"]
    assert tok.tokenize("东京2024年") == ["东", "京", "2024", "年"]  # Han per character, digits as a number
    assert tok.tokenize("コーヒーを") == ["コ", "ー", "ヒ", "ー", "を"]  # ー (script Common) counts as kana
    assert tok.tokenize("ที่นี่") == ["ที่", "นี่"]  # a Thai character keeps its vowel and tone marks
    assert tok.tokenize("नमस्ते, दुनिया") == ["नमस्ते", "दुनिया"]  # Devanagari vowel signs and virama stay in the word
    assert tok.tokenize("안녕하세요 세계") == ["안녕하세요", "세계"]  # Hangul by words: Korean uses spaces
    assert tok.tokenize("ＧＰＴ－４は running") == ["gpt", "4", "は", "run"]  # NFKC; Porter stems ASCII words only
    assert tok.tokenize("Häuser laufen") == ["häuser", "laufen"]  # non-ASCII word not stemmed; laufen: not English
    assert tok.tokenize("snake_case x+y") == ["snake", "case", "x", "y"]  # as rouge_score: _ and + separate


def test_english_stemmer_only_for_english_or_unknown_targets() -> None:
    assert score(["running"], ["run"], metrics=["rouge"])["rouge1"] == 100.0  # Porter: running → run
    assert score(["running"], ["run"], metrics=["rouge"], target_lang="en_XX")["rouge1"] == 100.0
    assert score(["running"], ["run"], metrics=["rouge"], target_lang="de_DE")["rouge1"] == 0.0
    assert score(["running"], ["run"], metrics=["rouge"], target_lang="de", use_stemmer=True)["rouge1"] == 100.0


# language code → sacrebleu tokenizer
LANGUAGE_TOKENIZERS = """
en:13a en_XX:13a de_DE:13a >>fra<<:13a ru_RU:13a el:13a
zh:zh zh_CN:zh zh-Hant-TW:zh zho_Hans:zh cmn_Hans:zh yue:zh
ja:char ja_XX:char jpn_Jpan:char __ja__:char th_TH:char lo:char km_KH:char my_MM:char ko_KR:13a kor_Hang:13a
ar_AR:intl fa_IR:intl he_IL:intl hi_IN:intl ta_IN:intl amh_Ethi:intl srp_Cyrl:13a uzb_Latn:13a
"""


@pytest.mark.parametrize(("code", "tokenizer"), [pair.rsplit(":", 1) for pair in LANGUAGE_TOKENIZERS.split()])
def test_bleu_tokenizer_for_language_codes(code: str, tokenizer: str) -> None:
    # A language of the table wins over the references (Latin here); one not in it (de, fr…) goes by them.
    assert bleu_tokenizer(code, ["Ein kleiner Test"]) == tokenizer
    if tokenizer != "13a":
        assert bleu_tokenizer(code) == tokenizer


@pytest.mark.parametrize(
    ("references", "script", "tokenizer"),
    [
        (["这是一个测试。", "我们很好"], "Han", "zh"),
        (["これはテストです"], "Japanese", "char"),
        (["東京都に行きます"], "Japanese", "char"),  # 4 Han, 4 kana
        (["Это тест", "ещё один"], "Cyrillic", "13a"),
        (["مرحبا بالعالم"], "Other", "intl"),
        (["สวัสดีครับ"], "Thai", "char"),
        (["안녕하세요"], "Hangul", "13a"),
        (["SELECT name FROM users WHERE id = 3;"], "Latin", "13a"),
        (["12 + 30 = 42"], None, "13a"),
        ([], None, "13a"),
    ],
)
def test_bleu_tokenizer_from_the_references_script(references: list[str], script: str | None, tokenizer: str) -> None:
    assert dominant_script(references) == script
    assert bleu_tokenizer(None, references) == bleu_tokenizer("xx_YY", references) == tokenizer


def test_language_subtags() -> None:
    assert language_subtags("zho_Hans") == ("zho", "Han")
    assert language_subtags(">>deu<<") == ("deu", None)
    assert language_subtags("zh-Hant-TW") == ("zh", "Han")
    assert language_subtags("en_XX") == ("en", None)
    assert language_subtags("") == ("", None)


# ------------------------------------------------------------------------------------------------- exact match
@pytest.mark.parametrize(
    ("prediction", "reference"),
    [
        ("Paris.", "paris"),
        ("  The   Answer\n", "the answer"),
        ("ＡＢＣ １２３", "abc 123"),  # NFKC: fullwidth letters and digits
        ("Straße", "STRASSE"),  # casefold, not lower
        ("«Да»", "да"),
        ('"Yes!"', "yes"),
        ("SELECT * FROM t;", "select * from t"),
        ("東京。", "東京"),
        ("¿Qué?", "qué"),
        ("Ελλάδα;", "ελλάδα"),  # Greek question mark U+037E (NFKC → ;)
    ],
)
def test_exact_match_normalisation_equal(prediction: str, reference: str) -> None:
    assert normalize_answer(prediction) == normalize_answer(reference)
    assert exact_match([prediction], [reference]) == 100.0


@pytest.mark.parametrize(
    ("prediction", "reference"),
    [("50%", "50"), ("f(x)", "f(x"), ("a b", "ab"), ("$5", "5"), ("x - y", "x y"), ("don't", "dont"), ("1.5", "15")],
)
def test_exact_match_keeps_what_carries_meaning(prediction: str, reference: str) -> None:
    assert exact_match([prediction], [reference]) == 0.0


def test_exact_match_is_a_percentage() -> None:
    assert score(["a", "B.", "c", "d"], ["a", "b", "x", "y"], metrics=["exact_match"]) == {"exact_match": 50.0}


# ------------------------------------------------------------------------------------------------------ ROUGE-Lsum
def test_identical_texts_score_100_and_disjoint_score_0() -> None:
    assert rouge(["a b c. d e f."], ["a b c. d e f."]) == dict.fromkeys(ROUGE_TYPES, 100.0)
    assert rouge(["x y z"], ["a b c"]) == dict.fromkeys(ROUGE_TYPES, 0.0)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("Birds fly high.", "Fish swim deep."),
        ("猫很可爱。", "狗很忠诚。"),
        ("Кошки спят днём.", "Собаки гуляют ночью."),
        ("बिल्ली सोती है।", "कुत्ता भौंकता है।"),
    ],
)
def test_rouge_lsum_uses_sentence_splits(first: str, second: str) -> None:
    # Same sentences in another order: rougeL punishes the order, rougeLsum (per-sentence LCS) does not.
    scores = score([f"{first} {second}"], [f"{second} {first}"], metrics=["rouge"])
    assert scores["rougeLsum"] == 100.0
    assert scores["rougeL"] < 100.0


def test_split_sentences_without_nltk() -> None:
    expected = ["Hello there.", "How are you?", "Fine!", "Thanks."]
    assert split_sentences("Hello there. How are you? Fine! Thanks.") == expected
    assert split_sentences('He said "Go." Then (quietly) left.') == ['He said "Go."', "Then (quietly) left."]
    assert split_sentences("Dr. Smith met Mr. Jones at 5 p.m. today. Then left.") == [
        "Dr. Smith met Mr. Jones at 5 p.m. today.",
        "Then left.",
    ]
    assert split_sentences("no punctuation at all") == ["no punctuation at all"]
    assert split_sentences("") == []


def test_split_sentences_in_other_scripts() -> None:
    assert split_sentences("你好。我很好！你呢？") == ["你好。", "我很好！", "你呢？"]
    assert split_sentences("他说：“走吧。”然后走了。") == ["他说：“走吧。”", "然后走了。"]
    assert split_sentences("Это тест. Второе предложение.") == ["Это тест.", "Второе предложение."]
    assert split_sentences("यह परीक्षा है। दूसरा वाक्य।") == ["यह परीक्षा है।", "दूसरा वाक्य।"]
    assert split_sentences("هل أنت بخير؟ نعم.") == ["هل أنت بخير؟", "نعم."]
    assert split_sentences("Τι κάνεις; Καλά.") == ["Τι κάνεις; Καλά."]  # ASCII ; is no sentence end
    assert split_sentences("Τι κάνεις\u037e Καλά.") == ["Τι κάνεις\u037e", "Καλά."]  # the Greek question mark is


# --------------------------------------------------------------------------------------------- names and choices
def test_metric_names_and_best_metric_names() -> None:
    assert metric_names(METRICS) == ALL_NAMES
    assert metric_names(["exact_match", "rouge", "exact_match"]) == ("exact_match", *ROUGE_TYPES)
    assert best_metric_names() == ("loss", *ALL_NAMES)
    assert [greater_is_better(n) for n in ("loss", "eval_loss", "rougeL", "eval_chrfpp", "exact_match")] == [
        False,
        False,
        True,
        True,
        True,
    ]
    with pytest.raises(ValueError, match="gen_len"):
        greater_is_better("gen_len")


def test_check_metrics_names_every_unknown_one() -> None:
    with pytest.raises(ValueError, match=r"'meteor', 'chrf\+\+' \(chrF\+\+ is called chrfpp\); allowed: rouge"):
        check_metrics(["rouge", "meteor", "chrf++"])
    with pytest.raises(ValueError, match="list of names"):
        check_metrics("rouge")
    with pytest.raises(ValueError, match="unknown metrics 'sacrebleu'"):
        score(["a"], ["a"], metrics=["sacrebleu"])


def test_task_defaults_are_known_metrics() -> None:
    assert default_metrics() == METRICS
    tasks = "translation summarization question_answering paraphrase code grammar_correction title"
    assert set(TASK_METRICS) == set(tasks.split())
    for task, metrics in TASK_METRICS.items():
        assert default_metrics(task) == check_metrics(metrics) and metrics, task
    assert "bleu" in default_metrics("translation") and "rouge" in default_metrics("summarization")
    assert default_metrics("question_answering")[0] == "exact_match"
    with pytest.raises(ValueError, match="unknown task 'poetry'"):
        default_metrics("poetry")


def test_score_empty_and_mismatched() -> None:
    assert score([], [], metrics=METRICS) == dict.fromkeys(ALL_NAMES, 0.0)
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        score(["a", "b"], ["a"], metrics=["bleu"])


# ------------------------------------------------------------------------------------------------ compute_metrics
class _Tok:
    pad_token_id = 0
    vocab: ClassVar[dict[int, str]] = {0: "<pad>", 1: "</s>", 5: "red", 6: "fox", 7: "river", 8: "猫", 9: "狗"}

    def batch_decode(self, rows, skip_special_tokens=True):
        sep = "" if any(int(i) in (8, 9) for row in rows for i in row) else " "
        return [sep.join(self.vocab[int(i)] for i in row if int(i) > 1) for row in rows]


def test_compute_metrics_decodes_and_counts_gen_len() -> None:
    compute = build_compute_metrics(_Tok(), metrics=["rouge", "exact_match"], target_lang="en")
    preds = np.array([[0, 5, 6, 1], [0, 7, 1, 0]])
    labels = np.array([[5, 6, 1, -100], [7, 1, -100, -100]])  # -100: label padding
    result = compute(SimpleNamespace(predictions=preds, label_ids=labels))
    assert set(result) == {*ROUGE_TYPES, "exact_match", "gen_len"}
    assert result["rouge1"] == 100.0 and result["exact_match"] == 100.0
    assert result["gen_len"] == pytest.approx(2.5)  # non-pad ids: 3 and 2


def test_compute_metrics_default_is_every_metric_and_handles_gathered_padding() -> None:
    compute = build_compute_metrics(_Tok())
    # Predictions gathered across processes are padded with -100 too; a tuple holds (ids, logits…).
    preds = np.array([[0, 8, 8, 9, 1, -100], [0, 9, 9, 8, 8, 1]])
    labels = np.array([[8, 8, 9, 1, -100, -100], [9, 9, 8, 9, 1, -100]])
    result = compute(SimpleNamespace(predictions=(preds, None), label_ids=labels))
    assert set(result) == {*ALL_NAMES, "gen_len"}
    # pair 1 identical (猫猫狗); pair 2: 狗狗猫猫 vs 狗狗猫狗 → 3 of 4 characters, so not all 100
    assert result["exact_match"] == 50.0 and 50 < result["rouge1"] < 100 and 0 < result["bleu"] < 100
    assert result["gen_len"] == pytest.approx(4.5)  # 4 and 5 non-pad ids


def test_compute_metrics_rejects_unknown_metrics_at_build_time() -> None:
    with pytest.raises(ValueError, match="unknown metrics 'bertscore'"):
        build_compute_metrics(_Tok(), metrics=["bertscore"])


def test_every_metric_and_tokenizer_runs_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a metric tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for lang in ("en", "zh", "ja", "ar", "ko"):  # 13a, zh, char, intl tokenizers
        assert score([PERFECT[lang]], [PERFECT[lang]], metrics=METRICS, target_lang=lang)["bleu"] == 100.0
