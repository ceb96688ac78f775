#!/usr/bin/env python3
"""Step 1: read /data/houses.csv and hand the rows on as .marshal/raw.json.

Cells are parsed into numbers; an empty cell becomes null. Nothing is
dropped here: cleaning is preprocess's job.
"""
import csv
import json
import os

from handoff import write_json

DATA = "/data/houses.csv"

NUMERIC = {"id": int, "area_sqm": float, "bedrooms": int, "bathrooms": int,
           "age_years": int, "distance_km": float, "price_k": float}


def parse(column, text):
    if text == "":
        return None
    convert = NUMERIC.get(column)
    return convert(text) if convert else text


def main():
    if not os.path.exists(DATA):
        raise SystemExit(f"read_data: {DATA} does not exist; make it with "
                         f"python3 make_data.py {DATA}")
    with open(DATA, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames)
        rows = [[parse(c, record[c]) for c in columns] for record in reader]
    missing = sum(1 for row in rows for cell in row if cell is None)
    path = write_json("raw.json", {"columns": columns, "rows": rows, "source": DATA})
    print(f"read_data: {len(rows)} rows, {len(columns)} columns, {missing} empty cells -> {path}")


if __name__ == "__main__":
    main()
