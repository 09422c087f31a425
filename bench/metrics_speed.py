"""How long job.metrics takes to score N prediction/reference pairs, per metric and in all, on synthetic text.

Summary-like pairs (English and Russian: 40–60 words; Chinese: 60–90 characters) made of a fixed vocabulary,
each prediction a noisy copy of its reference (about 70% of the words kept), so the scores are mid-range like a
real evaluation's. Prints one JSON object: seconds per metric and language, and the scores.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/metrics_speed.py            # 1,000 pairs
    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/metrics_speed.py --pairs 5000
"""

from __future__ import annotations

import argparse
import json
import random
import time

from job.metric_sets import METRICS
from job.metrics import score

# Space-separated vocabularies (Chinese: one character each).
_VOCABULARY = {
    "en": "the a cat dog sat ran on under mat river city council announced new plans for housing market prices rose "
    "fell sharply after report said officials were running tests yesterday today people happily agreed",
    "ru": "кошка собака сидела бежала на под ковре реке город совет объявил новые планы рынок жилья цены выросли "
    "упали резко после доклада сказал чиновники проводили испытания вчера сегодня люди согласились",
    "zh": " ".join("猫狗坐在垫子上河边城市议会宣布新的住房计划市场价格上涨下跌报告官员昨天今天人们同意测试"),
}


def _pairs(lang: str, n: int, rng: random.Random) -> tuple[list[str], list[str]]:
    words, sep = _VOCABULARY[lang].split(), "" if lang == "zh" else " "
    preds, refs = [], []
    for _ in range(n):
        ref = [rng.choice(words) for _ in range(rng.randint(60, 90) if lang == "zh" else rng.randint(40, 60))]
        pred = [w if rng.random() < 0.7 else rng.choice(words) for w in ref if rng.random() < 0.9]
        end = "。" if lang == "zh" else "."
        refs.append(sep.join(ref[: len(ref) // 2]) + end + " " + sep.join(ref[len(ref) // 2 :]) + end)
        preds.append(sep.join(pred) + end)
    return preds, refs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    args = parser.parse_args()
    rng = random.Random(0)
    report: dict[str, dict[str, object]] = {}
    for lang in _VOCABULARY:
        preds, refs = _pairs(lang, args.pairs, rng)
        seconds: dict[str, float] = {}
        for metric in METRICS:
            start = time.perf_counter()
            score(preds, refs, metrics=[metric], target_lang=lang)
            seconds[metric] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        scores = score(preds, refs, metrics=METRICS, target_lang=lang)
        seconds["all"] = round(time.perf_counter() - start, 3)
        report[lang] = {"pairs": args.pairs, "seconds": seconds, "scores": scores}
    print(json.dumps(report, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
