#!/usr/bin/env python3
"""Export the UCI ML hand-written digits set bundled with scikit-learn to data/digits/digits.csv.

scikit-learn ships this data inside its wheel (sklearn/datasets/data/digits.csv.gz), so this
script needs no network beyond installing scikit-learn itself:

    python3 -m venv /tmp/skvenv && /tmp/skvenv/bin/pip install scikit-learn
    /tmp/skvenv/bin/python scripts/export-digits.py

Columns: p0..p63 (row-major 8x8 pixel counts, integers 0..16), then `label` (0..9).
Rows keep scikit-learn's order, so the file is byte-for-byte reproducible.
"""

import csv
import pathlib
import sys

from sklearn.datasets import load_digits

OUT = pathlib.Path(__file__).resolve().parent.parent / "data" / "digits" / "digits.csv"


def main() -> int:
    digits = load_digits()
    data, target = digits.data, digits.target
    if data.shape != (1797, 64):
        raise SystemExit(f"unexpected shape {data.shape}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow([f"p{i}" for i in range(64)] + ["label"])
        for row, label in zip(data, target):
            w.writerow([int(v) for v in row] + [int(label)])
    print(f"wrote {len(target)} rows to {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
