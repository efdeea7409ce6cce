"""Per-objective training loss over windows of logged steps, token-weighted (the language tables).

  python -m experiments.language.window_losses METRICS_JSONL --prefixes R X S --windows 10-100 510-600
  python -m experiments.language.window_losses METRICS_JSONL --prefixes prefix masked --windows 10-50 260-300

For each prefix P, averages the logged `P/loss` over the logged steps inside
each window (inclusive), weighted by `P/tokens` (the number of target tokens
that loss covered in that batch); the row 'all' does the same with `loss` and
`tokens` (when logged). Prints a Markdown table, values in nats per target token.
"""

from __future__ import annotations

import argparse
import json


def window_loss(records: list[dict], loss_key: str, tokens_key: str, first: int, last: int) -> float:
    """Token-weighted mean of loss_key over the records with first <= step <= last."""
    total = weight = 0.0
    for record in records:
        if first <= record["step"] <= last and loss_key in record:
            tokens = record.get(tokens_key, 1.0)
            total += record[loss_key] * tokens
            weight += tokens
    return total / weight if weight else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics", help="a workdir's metrics.jsonl")
    parser.add_argument("--prefixes", nargs="+", required=True)
    parser.add_argument("--windows", nargs="+", required=True, metavar="FIRST-LAST")
    args = parser.parse_args()
    with open(args.metrics) as f:
        records = [json.loads(line) for line in f if line.strip()]
    records = [r for r in records if "loss" in r]  # training rows only, not evaluation rows
    windows = [tuple(int(x) for x in w.split("-")) for w in args.windows]
    print("| objective | " + " | ".join(f"steps {a}-{b}" for a, b in windows) + " |")
    print("| --- |" + " --- |" * len(windows))
    rows = [(p, f"{p}/loss", f"{p}/tokens") for p in args.prefixes] + [("all", "loss", "tokens")]
    for name, loss_key, tokens_key in rows:
        cells = [f"{window_loss(records, loss_key, tokens_key, a, b):.3f}" for a, b in windows]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
