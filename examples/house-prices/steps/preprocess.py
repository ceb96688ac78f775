#!/usr/bin/env python3
"""Step 2: clean, encode, split and standardize .marshal/raw.json.

- drops rows without a price or an area, and prices above 5 million (typos);
- fills a missing bedrooms or age with the median of the remaining rows;
- one-hot encodes the neighborhood (the first, alphabetically, is the baseline);
- splits 80/20 into train and test with a fixed seed;
- standardizes every feature with the train set's mean and standard deviation
  (stored with the train set, so evaluation can apply the same scaling).
Writes .marshal/train.json and .marshal/test.json.
"""
import json
import math
import random

from handoff import read_json, write_json

SEED = 42
TEST_FRACTION = 0.2
MAX_PRICE_K = 5000.0


def median(values):
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2.0


def main():
    raw = read_json("raw.json")
    records = [dict(zip(raw["columns"], row)) for row in raw["rows"]]
    total = len(records)

    kept = [r for r in records
            if r["price_k"] is not None and r["area_sqm"] is not None
            and r["price_k"] <= MAX_PRICE_K]
    dropped = total - len(kept)
    filled = 0
    for column in ("bedrooms", "age_years"):
        fill = median([r[column] for r in kept if r[column] is not None])
        for r in kept:
            if r[column] is None:
                r[column] = fill
                filled += 1

    hoods = sorted({r["neighborhood"] for r in kept})
    numeric = ["area_sqm", "bedrooms", "bathrooms", "age_years", "distance_km"]
    features = numeric + ["hood_" + h for h in hoods[1:]]

    def vector(r):
        return [float(r[c]) for c in numeric] + \
               [1.0 if r["neighborhood"] == h else 0.0 for h in hoods[1:]]

    kept.sort(key=lambda r: r["id"])
    random.Random(SEED).shuffle(kept)
    n_test = int(round(len(kept) * TEST_FRACTION))
    test, train = kept[:n_test], kept[n_test:]

    x_train = [vector(r) for r in train]
    mean = [sum(col) / len(col) for col in zip(*x_train)]
    std = []
    for j, col in enumerate(zip(*x_train)):
        var = sum((v - mean[j]) ** 2 for v in col) / len(col)
        std.append(math.sqrt(var) if var > 0 else 1.0)

    def scaled(rows):
        return [[(v - mean[j]) / std[j] for j, v in enumerate(vector(r))] for r in rows]

    common = {"features": features, "target": "price_k",
              "scaling": {"mean": mean, "std": std}}
    train_path = write_json("train.json", dict(common, ids=[r["id"] for r in train],
                                               x=scaled(train), y=[r["price_k"] for r in train]))
    test_path = write_json("test.json", dict(common, ids=[r["id"] for r in test],
                                             x=scaled(test), y=[r["price_k"] for r in test]))
    print(f"preprocess: {total} rows, dropped {dropped}, filled {filled} cells; "
          f"{len(features)} features; train {len(train)} -> {train_path}, "
          f"test {len(test)} -> {test_path}")


if __name__ == "__main__":
    main()
