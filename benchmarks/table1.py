"""Print a results store's Table 1 ablation of one model in the paper's layout.

    python benchmarks/table1.py --results docs/results.db --model zoo:bigan_ali_mnist5k \
        --epochs 10

Rows are the (θ1, θ2, ω) settings of the gradient term, then the activation model
(the linear probe) and fine-tuning; columns are the θ2 splits found in the store,
each with ``grad`` and ``full`` (gradfeat). Cells are mean ± std over seeds in %, with
the number of seeds when it differs from the most common one. Only rows of the
dataset's full training set are used.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from statistics import mean, stdev
from typing import Any, Iterable

from gradfeat_plugin.cli import ArgumentParser, main_guard
from gradfeat_plugin.errors import GradfeatError
from gradfeat_plugin.results.setting import setting_of_config
from gradfeat_plugin.results.store import ResultsStore

PARTS = ("THETA1", "THETA2", "PROBE")
# The paper's row order: θ1 random first, then pretrained; inside, θ2 then ω.
SETTINGS = [
    (t1, t2, w)
    for t1 in ("random", "pretrained")
    for t2 in ("random", "pretrained")
    for w in ("random", "pretrained")
]


def _config(record: dict[str, Any]) -> dict[str, Any]:
    """The stored config's values, flat (``ABLATION.THETA1`` -> ``"random"``)."""
    return {k: json.loads(v) for k, v in setting_of_config(record.get("config"))}


def _setting(record: dict[str, Any]) -> tuple[str, str, str]:
    config = _config(record)
    return tuple(config.get(f"ABLATION.{part}", "pretrained") for part in PARTS)  # type: ignore[return-value]


def _label_fraction(record: dict[str, Any]) -> float:
    return float(_config(record).get("DATA.LABEL_FRACTION", 1.0))


def _cell(values: list[float], seeds: int) -> str:
    if not values:
        return ""
    text = f"{100 * mean(values):.2f}"
    if len(values) > 1:
        text += f" ± {100 * stdev(values):.2f}"
    if len(values) != seeds:
        text += f" (n={len(values)})"
    return text


def table1(records: Iterable[dict[str, Any]], model: str, epochs: int | None) -> str:
    """The markdown table of ``model``'s ablation rows."""
    cells: dict[tuple, list[float]] = defaultdict(list)
    seen: set[tuple] = set()
    for r in sorted(records, key=lambda r: r["timestamp"], reverse=True):
        if r["model"] != model or r["status"] != "ok" or r["value"] is None:
            continue
        if (epochs and r["epochs"] != epochs) or _label_fraction(r) != 1.0:
            continue
        if r["weights"].split(";")[0] != "pretrained":
            continue
        setting = _setting(r) if r["protocol"] in ("grad", "gradfeat") else None
        key = (r["split"], r["protocol"], setting)
        if (key, r["seed"]) in seen:  # the latest run of a seed counts
            continue
        seen.add((key, r["seed"]))
        cells[key].append(r["value"])
    if not cells:
        raise GradfeatError(f"no ablation rows of {model} in the store")
    splits = sorted({k[0] for k in cells}, key=lambda s: (s.count(","), s))
    seeds = Counter(len(v) for v in cells.values()).most_common(1)[0][0]
    header = ["θ1", "θ2", "ω"] + [f"{p} ({s.replace(',', ' ')})" for s in splits for p in ("grad", "full")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 3 + "---:|" * (2 * len(splits))]
    for setting in SETTINGS:
        row = [_cell(cells.get((s, p, setting), []), seeds) for s in splits for p in ("grad", "gradfeat")]
        if any(row):
            lines.append("| " + " | ".join(list(setting) + row) + " |")
    for label, protocol in (("activation (linear probe)", "linear"), ("fine-tuning", "finetune")):
        row = []
        for s in splits:
            row += [_cell(cells.get((s, protocol, None), []), seeds), ""]
        lines.append(f"| {label} | | | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", required=True, help="results database")
    p.add_argument("--model", required=True, help="model spec, e.g. zoo:bigan_ali_mnist5k")
    p.add_argument("--epochs", type=int, help="only rows trained this many epochs")
    args = p.parse_args(argv)
    print(table1(ResultsStore(args.results).records(), args.model, args.epochs))
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
