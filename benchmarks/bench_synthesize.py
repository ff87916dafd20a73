"""CPU seconds of the synthetic generator per series and per slice, one core.

Rendering (template sampling, bleeds, slab averaging) is timed apart from writing
(DICOM files and ground-truth NIfTI), at the default size and at the larger size
documented for GPU machines. CPU time (process_time) is reported next to wall time
because the development machine is shared: wall time there says little.

    .venv/bin/python benchmarks/bench_synthesize.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from ichinpaint.synthetic import anatomy, dataset
from ichinpaint.synthetic.plan import plan_dataset

CASES = (
    # name, n_slices, matrix (the default draws 20-32 slices per series, 26 on average)
    ("default 26 x 256", 26, 256),
    ("GPU 26 x 512", 26, 512),
)
N_SERIES = 3


def timed(fn) -> tuple[float, float, object]:
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    return time.process_time() - cpu, time.perf_counter() - wall, result


def main() -> None:
    cpu, wall, _ = timed(anatomy.load_template)
    print(f"template build: {cpu:.2f} s CPU, {wall:.2f} s wall (once per worker process)\n")
    print(
        f"{'case':<18}{'render s/series':>16}{'write s/series':>16}{'ms/slice':>10}{'wall/CPU':>10}"
    )
    for name, n_slices, matrix in CASES:
        plan = plan_dataset(N_SERIES, n_slices, matrix, 1.0, seed=0, quirks=False)
        render_cpu = write_cpu = wall_total = cpu_total = 0.0
        with tempfile.TemporaryDirectory() as tmp:
            writer = dataset._SeriesWriter(Path(tmp))
            (Path(tmp) / "stage_2_train").mkdir()
            for series_plan in plan.series:
                c, w, _ = timed(lambda p=series_plan: dataset.render_plan(p))
                render_cpu += c
                c2, w2, _ = timed(lambda p=series_plan, wr=writer: wr(p))  # renders, writes
                write_cpu += max(c2 - c, 0.0)
                cpu_total += c2
                wall_total += w2
        per_series = render_cpu / N_SERIES
        print(
            f"{name:<18}{per_series:>16.2f}{write_cpu / N_SERIES:>16.2f}"
            f"{1000 * per_series / n_slices:>10.0f}{wall_total / cpu_total:>10.2f}"
        )
    print(
        "\nDefault stage (40 series) ~ 40 x (render + write) CPU seconds, split over n_jobs cores."
    )


if __name__ == "__main__":
    main()
