#!/usr/bin/env python3
"""Writes a deterministic, synthetic house-price data set as CSV.

    python3 make_data.py /data/houses.csv [--rows 3000] [--seed 7]

The same arguments always give the same bytes. Like real data, it has a few
flaws for preprocess.py to handle: missing values (about 1% of cells) and a
handful of prices typed a hundred times too large.
"""
import argparse
import csv
import os
import random

NEIGHBORHOODS = ["center", "north", "riverside", "suburb"]
NEIGHBORHOOD_PREMIUM = {"center": 120.0, "north": 35.0, "riverside": 60.0, "suburb": 0.0}


def make_rows(rows, seed):
    rng = random.Random(seed)
    out = []
    for i in range(1, rows + 1):
        area = round(rng.uniform(35.0, 260.0), 1)  # square metres
        bedrooms = max(1, min(6, int(round(area / 40.0 + rng.gauss(0.0, 0.7)))))
        bathrooms = max(1, min(4, int(round(bedrooms / 2.0 + rng.gauss(0.0, 0.5)))))
        age = rng.randint(0, 90)  # years
        distance = round(rng.uniform(0.3, 35.0), 2)  # km to the city center
        hood = rng.choice(NEIGHBORHOODS)
        price = (40.0 + 2.4 * area + 12.0 * bedrooms + 18.0 * bathrooms - 0.9 * age
                 - 3.5 * distance + NEIGHBORHOOD_PREMIUM[hood] + rng.gauss(0.0, 30.0))
        price = round(max(price, 20.0), 1)  # thousands
        row = {
            "id": i,
            "area_sqm": area,
            "bedrooms": bedrooms,
            "bathrooms": bathrooms,
            "age_years": age,
            "distance_km": distance,
            "neighborhood": hood,
            "price_k": price,
        }
        # Flaws: an empty cell now and then, and a few mistyped prices.
        for key in ("area_sqm", "bedrooms", "age_years", "price_k"):
            if rng.random() < 0.01:
                row[key] = ""
        if row["price_k"] != "" and rng.random() < 0.002:
            row["price_k"] = round(row["price_k"] * 100.0, 1)
        out.append(row)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="CSV file to write, e.g. /data/houses.csv")
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rows = make_rows(args.rows, args.seed)
    directory = os.path.dirname(os.path.abspath(args.path))
    os.makedirs(directory, exist_ok=True)
    tmp = args.path + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, args.path)
    print(f"wrote {len(rows)} rows to {args.path}")


if __name__ == "__main__":
    main()
