"""The strategy table of docs/results.md from `dvc exp` runs: one row per experiment.

Reads each experiment's `metrics/reports/detection.json` from its git ref (DVC keeps the
cache-less outputs in the experiment's commit), so it needs no re-run:

    .venv/bin/python benchmarks/strategy_table.py [EXP_NAME ...]   # default: every experiment
"""

from __future__ import annotations

import json
import subprocess
import sys

from ichinpaint.constants import MIMIC_KINDS, SUBTYPES

REPORT = "metrics/reports/detection.json"
KINDS = (*MIMIC_KINDS, "rim", "other")


def experiment_refs() -> dict[str, str]:
    out = subprocess.run(
        ["git", "for-each-ref", "refs/exps", "--format=%(refname)"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return {ref.rsplit("/", 1)[1]: ref for ref in out if "/exec/" not in ref}


def report(ref: str) -> dict:
    text = subprocess.run(
        ["git", "show", f"{ref}:{REPORT}"], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(text)


def row(name: str, m: dict) -> str:
    def fmt(key: str) -> str:
        return "n/a" if m.get(key) is None else f"{m[key]:.2f}"

    kinds = sorted(((k, m.get(f"fp_components_{k}") or 0.0) for k in KINDS), key=lambda i: -i[1])
    by_kind = ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in kinds if v >= 0.05) or "-"
    sens = " | ".join(fmt(f"sensitivity_{s}") for s in SUBTYPES)
    return (
        f"| {name} | {fmt('slice_auroc')} | {fmt('slice_ap')} | {sens} | "
        f"{fmt('fp_components_per_healthy_series')} | {by_kind} | {fmt('pixel_auprc')} | "
        f"{fmt('seconds_per_series')} |"
    )


def main() -> None:
    refs = experiment_refs()
    names = sys.argv[1:] or sorted(refs)
    print(
        "| experiment (`dvc exp`) | slice AUROC | AP | sens EDH | IPH | IVH | SAH | SDH | "
        "FP / healthy series | FP by kind | pixel AUPRC | s / series |"
    )
    print("|---" * 12 + "|")
    for name in names:
        print(row(name, report("HEAD" if name == "HEAD" else refs[name])))


if __name__ == "__main__":
    main()
