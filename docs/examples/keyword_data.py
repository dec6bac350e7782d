"""Writes the synthetic keyword-classification data README's fine-tuning example trains on.

Each row is a few words from a small vocabulary; label 1 iff the text contains "zebra" (every
other row). Learnable from a few hundred rows, so a tiny classifier shows whether fine-tuning
works at all. The same rows the end-to-end tests use (600 rows, seed 0).

    python docs/examples/keyword_data.py data/reviews.jsonl [--rows 600] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random

WORDS = ["apple", "river", "stone", "cloud", "green", "table", "music", "light", "paper",
         "storm", "quiet", "metal", "zone", "bread"]


def keyword_rows(n: int, seed: int = 0) -> list[dict]:
    """n rows {"text", "label"}; label 1 iff the text contains 'zebra' (odd rows)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ws = [rng.choice(WORDS) for _ in range(rng.randint(4, 9))]
        if i % 2:
            ws.insert(rng.randrange(len(ws) + 1), "zebra")
        rows.append({"text": " ".join(ws), "label": i % 2})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=pathlib.Path, help="the .jsonl file to write")
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w") as f:
        for row in keyword_rows(args.rows, args.seed):
            f.write(json.dumps(row) + "\n")
    print(f"wrote {args.rows} rows to {args.output}")


if __name__ == "__main__":
    main()
