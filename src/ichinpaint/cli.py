"""The `ichinpaint` command: one sub-command per pipeline stage, plus tools.

dvc.yaml calls these sub-commands with the stage's params unpacked as options
(``ichinpaint train ${train}``), so the same code runs inside and outside DVC and
`ichinpaint <stage> --help` documents every param.

Each module in ``ichinpaint.stages`` provides:
- a module docstring (the sub-command's description),
- ``add_arguments(parser)``: its options, with defaults and help,
- ``run(args) -> str``: does the work and returns a one-line summary.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

# sub-command -> one-line help; the module ichinpaint.stages.<name> is imported only
# when its sub-command runs, so `ichinpaint --help` does not pay for torch.
COMMANDS: dict[str, str] = {
    "synthesize": "write the embedded synthetic dataset in the RSNA layout",
    "filter": "pivot labels, read headers, split by patient, account for every image",
    "nifti": "stack each series into one HU NIfTI volume with a correct affine",
    "mask": "extract the brain from each HU volume",
    "png": "export brain-window PNG slices, masks and the slice manifest",
    "train": "train the conditional inpainting diffusion model",
    "detect": "inpaint every test slice on the grid and write anomaly maps",
    "evaluate": "choose thresholds on healthy validation, post-process, measure",
    "app": "serve the review app (Streamlit) on the pipeline's outputs",
    "export-onnx": "export the inpainter's UNet to ONNX beside its checkpoint",
    "synthesize-test": "write a small unlabelled synthetic folder (stage_2_test-like) for predict",
    "predict": "find hemorrhage in a folder of DICOM files (new studies, stage_2_test)",
}


def _load(name: str):
    # `export-onnx` -> ichinpaint.stages.export_onnx
    return importlib.import_module(f"ichinpaint.stages.{name.replace('-', '_')}")


def build_parser(names: list[str] | None = None) -> argparse.ArgumentParser:
    """The full parser for the sub-commands in `names`; the others get their help line only."""
    parser = argparse.ArgumentParser(
        prog="ichinpaint",
        description="Label-free intracranial hemorrhage detection by diffusion inpainting.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, summary in COMMANDS.items():
        if names is not None and name not in names:
            sub.add_parser(name, help=summary)
            continue
        module = _load(name)
        p = sub.add_parser(
            name,
            help=summary,
            description=(module.__doc__ or summary).strip(),
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Only import the stage that is asked for (torch is slow to import).
    wanted = [a for a in argv[:1] if a in COMMANDS]
    parser = build_parser(wanted)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    summary = _load(args.command).run(args)
    elapsed = time.perf_counter() - start
    print(f"[{args.command}] {summary} ({elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
