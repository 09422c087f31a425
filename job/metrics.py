"""Evaluation metrics for every seq2seq task, computed locally: ROUGE, BLEU, chrF, chrF++, exact match, gen_len.

Nothing here downloads anything: no ``evaluate.load`` (fetches a script from the Hub), no nltk ``punkt`` data, no
sacrebleu ``spm``/``flores`` tokenizers, no MeCab dictionaries. Air-gapped clusters get the same numbers.

Metrics (the names a job asks for → the names they produce, all 0–100, greater is better):

- ``rouge`` → ``rouge1 rouge2 rougeL rougeLsum``: mean F1 over pairs, ``rouge_score`` with :class:`UnicodeTokenizer`
- ``bleu`` → ``bleu``: sacrebleu corpus BLEU with the tokenizer :func:`bleu_tokenizer` picks
- ``chrf`` → ``chrf``: sacrebleu corpus chrF (character 6-grams, β = 2)
- ``chrfpp`` → ``chrfpp``: sacrebleu corpus chrF++ (chrF plus word uni- and bigrams)
- ``exact_match`` → ``exact_match``: % of pairs equal after :func:`normalize_answer`

``build_compute_metrics`` adds ``gen_len`` (mean generated tokens) and, through the Trainer, ``loss``.

ROUGE tokenization. ``rouge_score``'s default tokenizer keeps only ``[a-z0-9]``, so Cyrillic, Greek, Arabic, CJK…
text scores 0 even against itself. :class:`UnicodeTokenizer` keeps Unicode letters, combining marks and digits
(NFKC, lowercased), gives one token per character in scripts written without spaces between words
(:data:`CHAR_SCRIPTS`: Han, kana, Thai, Lao, Khmer, Myanmar…) and is token-for-token identical to ``rouge_score``'s
default on ASCII text. Hangul is tokenized by words: Korean puts spaces between words (eojeol).

BLEU tokenization follows the target language (:func:`bleu_tokenizer`): ``zh`` for Chinese, ``char`` for Japanese,
Thai, Lao, Khmer and Myanmar (``ja-mecab`` needs MeCab and a dictionary), ``intl`` for scripts with their own
punctuation (Arabic, Hebrew, Indic, Ethiopic, Armenian, Georgian…), ``13a`` (sacrebleu's default) otherwise.
"""

from __future__ import annotations

import logging
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import regex
import sacrebleu
from nltk.stem import porter
from rouge_score import rouge_scorer, tokenizers

from job.metric_sets import GEN_LEN, PRODUCES, ROUGE_TYPES, check_metrics, default_metrics

log = logging.getLogger(__name__)

# --- Scripts and languages --------------------------------------------------------------------------------------

_NO_SPACE_SCRIPTS = "Han Hiragana Katakana Bopomofo Yi Thai Lao Khmer Myanmar Tai_Le New_Tai_Lue Tai_Tham Tai_Viet"
CHAR_SCRIPTS = (*_NO_SPACE_SCRIPTS.split(), "Javanese", "Balinese")
"""Scripts written without spaces between words: ROUGE counts one token per character (plus its marks)."""

# Script_Extensions, so that the prolonged-sound mark ー and 〆 count as kana/Han; letters and digits only.
_CHAR = "[" + "".join(rf"\p{{scx={s}}}" for s in CHAR_SCRIPTS) + "]"
_TOKEN = regex.compile(rf"(?=[\p{{L}}\p{{N}}]){_CHAR}\p{{M}}*|(?:(?!{_CHAR})[\p{{L}}\p{{M}}\p{{N}}])+")


class UnicodeTokenizer(tokenizers.Tokenizer):
    """``rouge_score``'s tokenizer for every script (pass it as ``RougeScorer(tokenizer=...)``).

    NFKC, ``str.lower`` (as rouge_score), then tokens are runs of letters, combining marks and digits; in
    :data:`CHAR_SCRIPTS` each character with its marks is a token. Anything else separates tokens. On ASCII text
    this is exactly rouge_score's ``[a-z0-9]+`` tokenization. The Porter stemmer (English) stems only ASCII tokens
    longer than 3 characters, as rouge_score does; words of other scripts are left as they are.
    """

    def __init__(self, use_stemmer: bool = False) -> None:
        self._stemmer = porter.PorterStemmer() if use_stemmer else None
        self._stems: dict[str, str] = {}  # stemming dominates ROUGE's run time; the vocabulary repeats

    def _stem(self, token: str) -> str:
        if self._stemmer is None or len(token) <= 3 or not token.isascii():
            return token
        stem = self._stems.get(token)
        if stem is None:
            stem = self._stems[token] = self._stemmer.stem(token)
        return stem

    def tokenize(self, text: str) -> list[str]:
        text = unicodedata.normalize("NFKC", text).lower()
        return [self._stem(token) for token in _TOKEN.findall(text)]


# The script of the languages whose script decides the BLEU tokenizer; any other language (or none) is
# recognised from the references' letters (:func:`dominant_script`). ISO 639-1 and 639-2/3 codes.
_LANGUAGES_BY_SCRIPT = {
    "Han": "zh zho chi cmn yue wuu lzh",
    "Japanese": "ja jpn",
    "Hangul": "ko kor",
    "Thai": "th tha",
    "Lao": "lo lao",
    "Khmer": "km khm",
    "Myanmar": "my mya bur",
    "Greek": "el ell gre",
    "Cyrillic": "ru rus uk ukr bg bul be bel mk mkd kk kaz",
    # Arabic, Persian, Urdu, Pashto, Hebrew, Yiddish, Indic, Sinhala, Ethiopic, Armenian, Georgian, Tibetan, Thaana,
    # Sindhi, Uyghur: scripts with punctuation of their own, which 13a leaves glued to the words.
    "Other": "ar ara arb arz ary fa fas per pes ur urd ps pus pbt he heb yi yid hi hin mr mar ne nep npi bn ben gu "
    "guj pa pan ta tam te tel kn kan ml mal si sin or ori ory as asm am amh ti tir hy hye arm ka kat geo bo bod dv "
    "div sd snd ug uig",
}
_LANGUAGE_SCRIPT = {code: script for script, codes in _LANGUAGES_BY_SCRIPT.items() for code in codes.split()}
# ISO 15924 subtags, as in zho_Hans (NLLB), zh-Hant-TW (BCP 47), srp_Cyrl.
_SUBTAGS_BY_SCRIPT = {
    "Han": "hans hant hani",
    "Japanese": "jpan hira kana",
    "Hangul": "kore hang",
    "Thai": "thai",
    "Lao": "laoo",
    "Khmer": "khmr",
    "Myanmar": "mymr",
    "Latin": "latn",
    "Cyrillic": "cyrl",
    "Greek": "grek",
    "Other": "arab hebr deva beng guru gujr taml telu knda mlym sinh orya ethi armn geor tibt thaa",
}
_SCRIPT_SUBTAG = {tag: script for script, tags in _SUBTAGS_BY_SCRIPT.items() for tag in tags.split()}
SCRIPT_TOKENIZER = {
    **dict.fromkeys(("Latin", "Cyrillic", "Greek", "Hangul"), "13a"),
    **dict.fromkeys(("Japanese", "Thai", "Lao", "Khmer", "Myanmar"), "char"),
    "Han": "zh",
    "Other": "intl",
}
"""sacrebleu tokenizer for each script group (BLEU only; chrF needs no tokenizer)."""

_SCRIPT_RUN = regex.compile(
    r"(?P<Han>\p{Han}+)|(?P<Kana>[\p{Hiragana}\p{Katakana}]+)|(?P<Hangul>\p{Hangul}+)|(?P<Thai>\p{Thai}+)"
    r"|(?P<Lao>\p{Lao}+)|(?P<Khmer>\p{Khmer}+)|(?P<Myanmar>\p{Myanmar}+)|(?P<Latin>\p{Latin}+)"
    r"|(?P<Cyrillic>\p{Cyrillic}+)|(?P<Greek>\p{Greek}+)|(?P<Other>\p{L}+)"
)


def language_subtags(code: str) -> tuple[str, str | None]:
    """(language, script group or None) of a code: ``de_DE``, ``ja_XX`` (mBART), ``zho_Hans`` (NLLB),
    ``>>fra<<`` (Marian), ``__de__`` (M2M100), ``zh-Hant-TW`` (BCP 47) → ``de``, ``ja``, ``zho``, ``fra``…"""
    parts = [p for p in regex.split(r"[-_]", code.strip().strip("<>").lower()) if p]
    if not parts:
        return "", None
    script = next((_SCRIPT_SUBTAG[p] for p in parts[1:] if p in _SCRIPT_SUBTAG), None)
    return parts[0], script


def dominant_script(texts: Sequence[str], *, max_chars: int = 200_000) -> str | None:
    """The script group with the most letters in ``texts`` (the first ``max_chars`` characters), None if no letter.

    Japanese mixes kana and Han: any text whose kana are at least 5% of its Han + kana letters is Japanese.
    """
    counts: Counter[str] = Counter()
    seen = 0
    for text in texts:
        for match in _SCRIPT_RUN.finditer(text):
            counts[match.lastgroup or "Other"] += len(match.group())
        seen += len(text)
        if seen >= max_chars:
            break
    if not counts:
        return None
    cjk = counts.pop("Han", 0) + counts.get("Kana", 0)
    if cjk:
        counts["Japanese" if counts.get("Kana", 0) >= 0.05 * cjk else "Han"] = cjk
    counts.pop("Kana", None)
    return counts.most_common(1)[0][0]


def bleu_tokenizer(target_lang: str | None = None, references: Sequence[str] = ()) -> str:
    """sacrebleu tokenizer for BLEU: from the target language if it is one we know, else from the references' script.

    ``zh`` → ``zh``; ``ja``, ``th``, ``lo``, ``km``, ``my`` → ``char``; Arabic, Persian, Urdu, Hebrew, Hindi and the
    other Indic languages, Amharic, Armenian, Georgian, Tibetan… → ``intl``; Latin, Cyrillic, Greek and Korean
    (``ko-mecab`` needs MeCab) → ``13a``. No language and no letters → ``13a``.
    """
    script = None
    if target_lang:
        language, script = language_subtags(target_lang)
        script = script or _LANGUAGE_SCRIPT.get(language)
    if script is None:
        script = dominant_script(references)
    return SCRIPT_TOKENIZER.get(script or "Latin", "13a")


def _is_english(target_lang: str | None) -> bool:
    return target_lang is None or language_subtags(target_lang)[0] in ("en", "eng")


# --- Sentences for ROUGE-Lsum ----------------------------------------------------------------------------------

# A sentence ends at . ! ? … (or ; ։ ። ။ ؟ ۔ । ॥ of Greek, Armenian, Ethiopic, Myanmar, Arabic, Urdu, Devanagari),
# optionally followed by closing quotes/brackets, then whitespace, when the next word starts with a capital, a
# digit or a letter of a caseless script; or right after 。！？ (Chinese and Japanese use no spaces).
# Group 1 (a branch reset: both branches number it 1) is the closing quotes, which stay with their sentence.
_SENTENCE_END = regex.compile(
    r"(?|(?<=[.!?…\u037e։።။؟۔।॥])([\"'”’»)\]]*)\s+(?=[\"'“‘«„(\[¿¡]?[\p{Lu}\p{Lt}\p{Lo}\p{N}])"
    r"|(?<=[。！？])([」』”’）)\]]*)\s*)"
)
_ABBREVIATION = regex.compile(r"(?:\b[A-Za-z]\.|\b(?:Mr|Mrs|Ms|Dr|Prof|St|Jr|Sr|vs|etc|e\.g|i\.e|No|Inc|Ltd|Co))\.?$")


def split_sentences(text: str) -> list[str]:
    """Split text into sentences without nltk data, for ROUGE-Lsum (one sentence per line)."""
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        candidate = text[start : match.end(1)].strip()
        if _ABBREVIATION.search(candidate):
            continue
        if candidate:
            pieces.append(candidate)
        start = match.end()
    tail = text[start:].strip()
    if tail:
        pieces.append(tail)
    return pieces


# --- Metrics ---------------------------------------------------------------------------------------------------


def rouge(predictions: Sequence[str], references: Sequence[str], *, use_stemmer: bool = True) -> dict[str, float]:
    """Mean ROUGE-1/2/L/Lsum F-measures ×100 over the pairs (as transformers' summarization example reports)."""
    _check_pairs(predictions, references)
    if not predictions:
        return dict.fromkeys(ROUGE_TYPES, 0.0)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=UnicodeTokenizer(use_stemmer))
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for pred, ref in zip(predictions, references, strict=True):
        # rougeLsum takes newlines as sentence boundaries.
        scores = scorer.score("\n".join(split_sentences(ref)), "\n".join(split_sentences(pred)))
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    return {name: 100 * total / len(predictions) for name, total in totals.items()}


# Stripped from both ends of an answer: sentence-final marks and quotes of many scripts (NFKC has already turned
# … into ... and fullwidth ！？ into ASCII). Brackets, dashes, symbols ($ % ° + …) and anything inside stay.
_EDGE_PUNCTUATION = ".,;:!?\"'«»“”„‘’‚‹›「」『』。、，；：！？¿¡؟،؛۔।॥։።"
_WHITESPACE = regex.compile(r"\s+")


def normalize_answer(text: str) -> str:
    """Exact-match normal form: NFKC, casefold, whitespace runs → one space, quotes and final marks off the ends."""
    text = _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold())
    return text.strip(" " + _EDGE_PUNCTUATION).strip()


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Percentage (0–100) of predictions equal to their reference after :func:`normalize_answer`."""
    _check_pairs(predictions, references)
    if not predictions:
        return 0.0
    hits = sum(normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references, strict=True))
    return 100 * hits / len(predictions)


def bleu(predictions: Sequence[str], references: Sequence[str], *, tokenizer: str = "13a") -> float:
    """sacrebleu corpus BLEU (0–100) with one reference per prediction and a sacrebleu tokenizer name."""
    _check_pairs(predictions, references)
    # effective_order: a corpus without any 4-gram (one-word answers, titles) scores by the orders it has
    # instead of 0; identical to sacrebleu's corpus default whenever every order occurs.
    scorer = sacrebleu.BLEU(tokenize=tokenizer, effective_order=True)
    return float(scorer.corpus_score(list(predictions), [list(references)]).score) if predictions else 0.0


def chrf(predictions: Sequence[str], references: Sequence[str], *, word_order: int = 0) -> float:
    """sacrebleu corpus chrF (0–100): character 6-grams, β = 2; ``word_order=2`` is chrF++ (plus word bigrams)."""
    _check_pairs(predictions, references)
    scorer = sacrebleu.CHRF(word_order=word_order)
    return float(scorer.corpus_score(list(predictions), [list(references)]).score) if predictions else 0.0


def score(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    metrics: Sequence[str],
    target_lang: str | None = None,
    use_stemmer: bool | None = None,
) -> dict[str, float]:
    """The :func:`metric_names` of ``metrics`` for these pairs, each 0–100 and rounded to 4 decimals.

    ``target_lang`` (any code: ``de``, ``zh_CN``, ``ja_XX``, ``zho_Hans``, ``>>fra<<``) picks the BLEU tokenizer
    (:func:`bleu_tokenizer`; without it, the references' script does) and whether ROUGE uses the Porter stemmer
    (``use_stemmer=None``: when it is English or not given). BLEU and chrF are corpus-level, as sacrebleu
    computes them; ROUGE and exact match are means over the pairs. No pairs: every value is 0.
    """
    chosen = check_metrics(metrics)
    _check_pairs(predictions, references)
    result: dict[str, float] = {}
    for metric in chosen:
        if not predictions:
            result.update(dict.fromkeys(PRODUCES[metric], 0.0))
        elif metric == "rouge":
            stem = _is_english(target_lang) if use_stemmer is None else use_stemmer
            result.update(rouge(predictions, references, use_stemmer=stem))
        elif metric == "exact_match":
            result[metric] = exact_match(predictions, references)
        elif metric == "bleu":
            result[metric] = bleu(predictions, references, tokenizer=bleu_tokenizer(target_lang, references))
        else:
            result[metric] = chrf(predictions, references, word_order=2 if metric == "chrfpp" else 0)
    return {name: round(value, 4) for name, value in result.items()}


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")


def decode(tokenizer: Any, ids: Any) -> list[str]:
    """Token ids (a padded array; -100 marks padding, as the Trainer gathers them) → stripped texts."""
    if isinstance(ids, tuple):
        ids = ids[0]
    ids = np.where(np.asarray(ids) < 0, _pad_id(tokenizer), ids)
    return [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]


def mean_generated_length(tokenizer: Any, ids: Any) -> float:
    """``gen_len``: the mean number of tokens that are not padding in each generated row."""
    if isinstance(ids, tuple):
        ids = ids[0]
    ids = np.asarray(ids)
    pad_id = _pad_id(tokenizer)
    ids = np.where(ids < 0, pad_id, ids)
    return round(float(np.mean(np.count_nonzero(ids != pad_id, axis=1))), 4) if len(ids) else 0.0


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def build_compute_metrics(
    tokenizer: Any,
    *,
    metrics: Sequence[str] | None = None,
    target_lang: str | None = None,
    references: Sequence[str] | None = None,
) -> Callable[[Any], dict[str, float]]:
    """A ``compute_metrics`` for Seq2SeqTrainer with ``predict_with_generate=True``.

    Returns :func:`score`'s names for ``metrics`` (default: all of :data:`METRICS`) plus ``gen_len``, the mean
    number of non-pad tokens generated. ``references``: the evaluation set's targets as written, in its order
    (the job passes them); without them the decoded labels are the references, which are cut at the
    tokenized max target length and lose what the tokenizer cannot represent.
    """
    chosen = default_metrics() if metrics is None else check_metrics(metrics)
    texts = list(references) if references is not None else None

    def compute_metrics(eval_prediction: Any) -> dict[str, float]:
        predictions = decode(tokenizer, eval_prediction.predictions)
        given = texts is not None and len(texts) == len(predictions)
        if texts is not None and not given:
            log.warning("%d references for %d predictions: scoring the decoded labels", len(texts), len(predictions))
        references = texts if given else decode(tokenizer, eval_prediction.label_ids)
        result = score(predictions, references, metrics=chosen, target_lang=target_lang)
        result[GEN_LEN] = mean_generated_length(tokenizer, eval_prediction.predictions)
        return result

    return compute_metrics
