"""The inpainter's UNet as ONNX: export (dynamic batch axis) and an onnxruntime caller.

The exported graph is the network call detection counts (``model.unet_forward``):
inputs ``x_t (B, 1, H, W)`` float32, ``t (B,)`` int64 timesteps, ``concat (B, C, H, W)``
float32 conditioning in `model.CONDITIONING` order; output ``(B, 2, H, W)`` float32
(velocity and learned-variance channels), exactly what mediffusion's UNet returns.
The diffusion arithmetic stays in torch (`detection.sampler`), so only the network
runs in onnxruntime (``detect.backend: onnxruntime``).

The TorchScript-based exporter (``dynamo=False``) is used: it needs no onnxscript
and handles mediffusion's UNet (attention, GroupNorm32, timestep embedding) as is.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ichinpaint.io import atomic_path

INPUT_NAMES: tuple[str, ...] = ("x_t", "t", "concat")
OUTPUT_NAME = "out"
OPSET = 17
BACKENDS: tuple[str, ...] = ("torch", "onnxruntime")


def onnx_path_for(ckpt_path: str | os.PathLike) -> Path:
    """Where the ONNX export of a checkpoint lives: next to it, ``.onnx``."""
    return Path(ckpt_path).with_suffix(".onnx")


class _UNetCall(torch.nn.Module):
    """``unet(x_t, t, concat=concat)`` as a module with positional inputs (what export traces)."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, concat: torch.Tensor) -> torch.Tensor:
        return self.unet(x_t, t, concat=concat)


def example_inputs(
    img_size: int, n_concat: int, batch: int = 2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random inputs of the UNet's contract (images and masks in [-1, 1], timesteps)."""
    generator = torch.Generator().manual_seed(seed)
    x_t = torch.randn((batch, 1, img_size, img_size), generator=generator)
    t = torch.randint(0, 1000, (batch,), generator=generator, dtype=torch.long)
    concat = torch.rand((batch, n_concat, img_size, img_size), generator=generator) * 2 - 1
    return x_t, t, concat


def export_unet(module, path: str | os.PathLike) -> Path:
    """Write `module`'s UNet (fp32, CPU copy) to `path` as ONNX with a dynamic batch axis."""
    import copy

    unet = copy.deepcopy(module.model).float().cpu().eval()
    unet = unet.to(memory_format=torch.contiguous_format)
    config = module.config.model
    inputs = example_inputs(int(config.input_size), int(config.concat_channels))
    batch = {0: "batch"}
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about mediffusion's shape asserts; parity() is the real check.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            _UNetCall(unet),
            inputs,
            str(tmp),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes={name: batch for name in (*INPUT_NAMES, OUTPUT_NAME)},
            opset_version=OPSET,
            dynamo=False,
        )
    return Path(path)


class OnnxUNet:
    """Calls an exported UNet with onnxruntime; same signature as ``unet(x_t, t, concat=...)``.

    Tensors go in and come back as torch (on the inputs' device) so the sampler does
    not know which backend runs. `threads` = intra-op threads (0: onnxruntime's default).
    """

    def __init__(self, path: str | os.PathLike, threads: int = 0) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no ONNX export of the inpainter (run `ichinpaint export-onnx`)"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.log_severity_level = 3
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, concat: torch.Tensor) -> torch.Tensor:
        feeds = {
            "x_t": _numpy(x_t, np.float32),
            "t": _numpy(t, np.int64),
            "concat": _numpy(concat, np.float32),
        }
        (out,) = self.session.run([OUTPUT_NAME], feeds)
        return torch.from_numpy(out).to(x_t.device)


def _numpy(tensor: torch.Tensor, dtype: type) -> np.ndarray:
    return np.ascontiguousarray(
        tensor.detach().float().cpu().numpy()
        if dtype is np.float32
        else tensor.detach().cpu().numpy(),
        dtype=dtype,
    )


def onnx_net(path: str | os.PathLike, threads: int = 0):
    """A network for `detection.sampler.UNetRunner(net=...)`: ``net(x_t, t, concat=concat)``."""
    runner = OnnxUNet(path, threads=threads)

    def net(x_t: torch.Tensor, t: torch.Tensor, concat: torch.Tensor) -> torch.Tensor:
        return runner(x_t, t, concat)

    net.session = runner.session  # type: ignore[attr-defined]
    return net


@torch.no_grad()
def parity(module, path: str | os.PathLike, *, batch: int = 2, seed: int = 0, inputs=None) -> float:
    """Largest |torch - onnxruntime| of the UNet on `inputs` (random ones by default)."""
    config = module.config.model
    if inputs is None:
        inputs = example_inputs(int(config.input_size), int(config.concat_channels), batch, seed)
    x_t, t, concat = (v.cpu() for v in inputs)
    unet = module.model.float().cpu().eval()
    expected = unet(x_t, t, concat=concat).float()
    got = OnnxUNet(path)(x_t, t, concat)
    return float((expected - got).abs().max())
