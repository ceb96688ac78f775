#!/usr/bin/env python3
"""Step 3: fit a linear regression on .marshal/train.json.

Ordinary least squares with a small ridge term, solved exactly through the
normal equations (X^T X + lambda I) w = X^T y by Gaussian elimination with
partial pivoting; the intercept is not penalized. Plain Python, no numpy.
Writes .marshal/model.json.
"""
import json
import math

from handoff import read_json, write_json

RIDGE = 1e-3


def solve(a, b):
    """Solves a x = b for a square, non-singular a (lists; both are copied)."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-12:
            raise SystemExit("train: the features are linearly dependent; cannot fit")
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, n):
            f = m[r][col] / m[col][col]
            if f:
                for c in range(col, n + 1):
                    m[r][c] -= f * m[col][c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (m[r][n] - sum(m[r][c] * x[c] for c in range(r + 1, n))) / m[r][r]
    return x


def main():
    train = read_json("train.json")
    rows = [[1.0] + x for x in train["x"]]  # column 0: the intercept
    y = train["y"]
    k = len(rows[0])
    xtx = [[0.0] * k for _ in range(k)]
    xty = [0.0] * k
    for row, target in zip(rows, y):
        for i in range(k):
            ri = row[i]
            xty[i] += ri * target
            xtx_i = xtx[i]
            for j in range(i, k):
                xtx_i[j] += ri * row[j]
    for i in range(k):
        for j in range(i):
            xtx[i][j] = xtx[j][i]
        if i > 0:
            xtx[i][i] += RIDGE * len(rows)
    w = solve(xtx, xty)

    residuals = [t - sum(a * b for a, b in zip(w, row)) for row, t in zip(rows, y)]
    rmse = math.sqrt(sum(r * r for r in residuals) / len(residuals))
    model = {
        "kind": "linear_regression",
        "solver": "normal_equations",
        "ridge": RIDGE,
        "features": train["features"],
        "target": train["target"],
        "scaling": train["scaling"],
        "intercept": w[0],
        "weights": dict(zip(train["features"], w[1:])),
        "train_rows": len(rows),
        "train_rmse": rmse,
    }
    path = write_json("model.json", model, indent=1)
    print(f"train: fitted {len(w) - 1} weights on {len(rows)} rows, "
          f"train RMSE {rmse:.2f} k -> {path}")


if __name__ == "__main__":
    main()
