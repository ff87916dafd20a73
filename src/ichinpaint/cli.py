"""The `ichinpaint` command: one sub-command per pipeline stage, plus tools.

dvc.yaml calls these sub-commands with the stage's params unpacked as options
(``ichinpaint train ${train}``), so the same code runs inside and outside DVC and
`ichinpaint <stage> --help` documents every param.

Each module in ``ichinpaint.stages`` provides:
- a module docstring (the sub-command's description),
- ``add_arguments(parser)``: its options, with defaults and help,
- ``run(args) -> str``: does the work and returns a one-line summary;
- optionally ``HEADLINE``: {headline name: key of its ``--metrics`` JSON}. Such a
  stage also takes ``--headline PATH``: after the run, those few values of the
  ``--metrics`` report are written there (the file dvc.yaml lists as metrics).
- ``PARAM_RULES`` (optional): option -> `ichinpaint.params.Rule`, checked before ``run``,
  and ``check_args(args)`` (optional) for rules that join several options.

Errors: a failing stage prints one line, ``ichinpaint <command>: error: <what>``, to
stderr and exits 1 (2 for bad options). The traceback is printed only with ``--debug``
(anywhere on the command line) or ``ICHINPAINT_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

from ichinpaint import names, params

DEBUG_FLAG = "--debug"
DEBUG_ENV = "ICHINPAINT_DEBUG"
# Errors whose message is written for the user (names the file or value): shown as they are.
USER_ERRORS = (ValueError, OSError)

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


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (no usage block), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {names.printable(message)}\n")


def build_parser(wanted: list[str] | None = None) -> argparse.ArgumentParser:
    """The full parser for the sub-commands in `wanted`; the others get their help line only."""
    parser = OneLineParser(
        prog="ichinpaint",
        description="Label-free intracranial hemorrhage detection by diffusion inpainting. "
        f"Add {DEBUG_FLAG} (or set {DEBUG_ENV}=1) to see tracebacks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, summary in COMMANDS.items():
        if wanted is not None and name not in wanted:
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
        if hasattr(module, "HEADLINE"):
            p.add_argument(
                "--headline",
                default="",
                help="also write the headline values "
                f"({', '.join(module.HEADLINE)}) of --metrics to this JSON, for `dvc metrics`",
            )
    return parser


def subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]
    raise KeyError(command)


def empty_lists_from_dvc(sub: argparse.ArgumentParser, argv: list[str], args) -> None:
    """Under DVC, a list option absent from the command was an empty list in params.yaml.

    DVC unpacks ``key: []`` to nothing, so without this the option's default would run
    silently (``dvc exp run -S detect.splits=[]`` detecting the default splits). The
    option becomes ``[]``, which its rule then accepts or refuses.
    """
    if not os.environ.get("DVC_STAGE"):
        return
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    for action in sub._actions:
        optional = bool(action.option_strings)  # positional lists are never from params
        if (
            optional
            and action.nargs in ("+", "*")
            and not given.intersection(action.option_strings)
        ):
            setattr(args, action.dest, [])


def check_params(module, args: argparse.Namespace) -> None:
    params.validate(args, getattr(module, "PARAM_RULES", {}))
    check = getattr(module, "check_args", None)
    if check is not None:
        check(args)


def error_line(exc: BaseException) -> str:
    """The exception as one line: its message, with the type when the message is not enough."""
    message = " ".join(str(exc).split()) or "(no message)"
    if not isinstance(exc, USER_ERRORS):
        message = f"{type(exc).__name__}: {message}"
    return names.printable(message)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != DEBUG_FLAG]
    # Only import the stage that is asked for (torch is slow to import).
    wanted = [a for a in argv[:1] if a in COMMANDS]
    parser = build_parser(wanted)
    args = parser.parse_args(argv)
    prog = f"ichinpaint {args.command}"
    module = _load(args.command)
    try:
        sub = subparser(parser, args.command)
        empty_lists_from_dvc(sub, argv, args)
        try:
            check_params(module, args)
        except params.ParamError as exc:
            sub.error(str(exc))
        start = time.perf_counter()
        summary = module.run(args)
        if getattr(args, "headline", ""):
            from ichinpaint.io import write_headline

            write_headline(args.metrics, args.headline, module.HEADLINE)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        print(f"{prog}: error: {error_line(exc)} (traceback: {DEBUG_FLAG})", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start
    print(f"[{args.command}] {summary} ({elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
