"""Generate the demo data set: a small extractive "keyword summary" task.

Each input is a 10–40 word news-like sentence: filler clauses around one event told in a recognisable
pattern ("the red fox jumped over the fence near the river on monday"). The target is the event's key
words in a fixed order, colour animal verb place day ("red fox jumped river monday"). The key words come
from their own small word lists and never appear in the filler, so a tiny randomly initialised model can
learn to copy them out in a few epochs. About 150 distinct words in all.

Deterministic (``random.Random(0)``): running it again rewrites byte-identical files::

    python examples/make_demo_data.py                 # writes examples/demo_data/{train,validation}.csv
    python examples/make_demo_data.py --out-dir /tmp/demo
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

TRAIN_ROWS = 400
VALID_ROWS = 80
MIN_WORDS = 10
MAX_WORDS = 40
DEFAULT_OUT = Path(__file__).resolve().parent / "demo_data"

COLOURS = ["red", "blue", "green", "black", "white", "brown", "grey", "yellow", "orange", "purple"]
ANIMALS = [
    "fox",
    "dog",
    "cat",
    "horse",
    "goat",
    "sheep",
    "rabbit",
    "owl",
    "duck",
    "bear",
    "wolf",
    "deer",
    "mouse",
    "pig",
    "cow",
]
VERBS = [
    "jumped",
    "ran",
    "slept",
    "swam",
    "danced",
    "hid",
    "rested",
    "sang",
    "climbed",
    "wandered",
    "played",
    "waited",
]
PLACES = [
    "river",
    "barn",
    "forest",
    "bridge",
    "market",
    "school",
    "garden",
    "station",
    "church",
    "harbour",
    "castle",
    "meadow",
]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
PREPOSITIONS = ["over the fence near", "around the corner by", "behind the wall at", "close to", "next to"]
OPENERS = ["Report:", "News:", "Update:", "Bulletin:", "Local news:", "Breaking:"]
LEADS = [
    "this week",
    "early in the morning",
    "late at night",
    "according to local reports",
    "as expected",
    "once again",
    "for the first time",
]
TAILS = [
    "witnesses said",
    "and nobody knows why",
    "said a local farmer",
    "the mayor confirmed",
    "while a small crowd watched",
    "before the rain started",
    "and then it went home",
    "to the surprise of many",
    "people told the paper",
    "which was quite unusual",
    "as children laughed",
    "and the town talked about it for days",
]
FILLER = [
    "it was a quiet day",
    "the weather was mild",
    "some people stopped to look",
    "a few cars drove past",
    "the sky was clear",
    "nothing else happened",
    "the shops were still open",
    "an old man took a photo",
    "a light wind was blowing",
    "the streets were busy",
    "most people were at work",
    "the bells rang twice",
]


def _event(rng: random.Random) -> tuple[list[str], str]:
    """One event in one of three word orders, and its keyword summary."""
    colour, animal, verb = rng.choice(COLOURS), rng.choice(ANIMALS), rng.choice(VERBS)
    place, day = rng.choice(PLACES), rng.choice(DAYS)
    prep = rng.choice(PREPOSITIONS)
    pattern = rng.randrange(3)
    if pattern == 0:
        text = f"the {colour} {animal} {verb} {prep} the {place} on {day}"
    elif pattern == 1:
        text = f"on {day} the {colour} {animal} {verb} {prep} the {place}"
    else:
        text = f"near the {place} the {colour} {animal} {verb} on {day}"
    return text.split(), f"{colour} {animal} {verb} {place} {day}"


def make_example(rng: random.Random) -> tuple[str, str]:
    """Return one ``(text, target)`` pair with 10–40 words of text."""
    goal = rng.randint(MIN_WORDS, MAX_WORDS)
    event, target = _event(rng)
    words = [*rng.choice(OPENERS).split(), *event]
    if rng.random() < 0.5:
        lead = rng.choice(LEADS).split()
        words[len(words) - len(event) : len(words) - len(event)] = lead
        words[len(words) - len(event) - 1] += ","
    clauses: list[str] = []
    pool = TAILS + FILLER
    while True:
        clause = rng.choice(pool)
        if len(words) + sum(len(c.split()) for c in clauses) + len(clause.split()) > MAX_WORDS:
            break
        clauses.append(clause)
        if len(words) + sum(len(c.split()) for c in clauses) >= goal:
            break
    text = " ".join(words)
    for clause in clauses:
        text += ", " + clause
    return text + ".", target


def generate(n_train: int = TRAIN_ROWS, n_valid: int = VALID_ROWS, seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """Return ``{"train": [...], "validation": [...]}`` of distinct ``(text, target)`` pairs."""
    rng = random.Random(seed)
    seen: set[str] = set()
    rows: list[tuple[str, str]] = []
    while len(rows) < n_train + n_valid:
        text, target = make_example(rng)
        if text not in seen:
            seen.add(text)
            rows.append((text, target))
    return {"train": rows[:n_train], "validation": rows[n_train:]}


def write_demo_data(out_dir: Path) -> list[Path]:
    """Write ``train.csv`` and ``validation.csv`` (columns ``text,target``) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for split, rows in generate().items():
        path = out_dir / f"{split}.csv"
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["text", "target"])
            writer.writerows(rows)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help=f"default: {DEFAULT_OUT}")
    args = parser.parse_args(argv)
    for path in write_demo_data(args.out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
