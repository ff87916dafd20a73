"""Export the inpainter's UNet to ONNX next to its checkpoint (models/inpainter.onnx).

The graph has a dynamic batch axis: inputs x_t (B, 1, H, W), t (B,) int64 and the
conditioning channels concat (B, C, H, W); output (B, 2, H, W). After writing, the
export is checked against torch on random inputs (max |difference| <= --tolerance),
so a broken export never lands. `detect --backend onnxruntime` and `predict` use it.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="models/inpainter.ckpt", help="inpainter weights (+ .json beside)"
    )
    parser.add_argument(
        "--out", default="", help="ONNX file ('' = the checkpoint's path with .onnx)"
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest allowed |torch - onnxruntime| on the check inputs",
    )


def run(args: argparse.Namespace) -> str:
    from ichinpaint.model import load_inpainter
    from ichinpaint.onnxunet import export_unet, onnx_path_for, parity

    module, spec = load_inpainter(args.model, device="cpu")
    out = Path(args.out) if args.out else onnx_path_for(args.model)
    export_unet(module, out)
    worst = parity(module, out, batch=3)
    if worst > args.tolerance:
        out.unlink()
        raise RuntimeError(
            f"{out}: onnxruntime differs from torch by {worst:.3g} > {args.tolerance:g}; removed"
        )
    n_params = sum(p.numel() for p in module.model.parameters())
    return (
        f"{n_params / 1e6:.2f} M-parameter UNet at {spec.img_size} px -> {out} "
        f"(max |torch - onnxruntime| {worst:.2g})"
    )
