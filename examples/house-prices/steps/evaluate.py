#!/usr/bin/env python3
"""Step 4: score .marshal/model.json on .marshal/test.json.

Computes RMSE, MAE and R^2 on the held-out test set, writes them to
.marshal/metrics.json and prints them.
"""
import json
import math

from handoff import read_json, write_json


def main():
    model = read_json("model.json")
    test = read_json("test.json")
    if test["features"] != model["features"]:
        raise SystemExit("evaluate: the test set's features differ from the model's; "
                         "re-run preprocess and train")
    weights = [model["weights"][f] for f in model["features"]]
    predictions = [model["intercept"] + sum(w * v for w, v in zip(weights, x))
                   for x in test["x"]]
    y = test["y"]
    n = len(y)
    errors = [p - t for p, t in zip(predictions, y)]
    mean_y = sum(y) / n
    ss_res = sum(e * e for e in errors)
    ss_tot = sum((t - mean_y) ** 2 for t in y)
    metrics = {
        "test_rows": n,
        "rmse_k": round(math.sqrt(ss_res / n), 6),
        "mae_k": round(sum(abs(e) for e in errors) / n, 6),
        "r2": round(1.0 - ss_res / ss_tot, 6),
        "target": model["target"],
    }
    path = write_json("metrics.json", metrics, indent=1)
    print(json.dumps(metrics, sort_keys=True))
    print(f"evaluate: RMSE {metrics['rmse_k']:.2f} k, MAE {metrics['mae_k']:.2f} k, "
          f"R^2 {metrics['r2']:.4f} on {n} test rows -> {path}")


if __name__ == "__main__":
    main()
