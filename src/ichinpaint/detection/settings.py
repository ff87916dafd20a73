"""The detect stage's settings: the ``detect`` params, declared once.

`DetectSettings` is what the stage's options are made from (`ichinpaint.params`), what
the runner takes, and, through `record_fields`, what ``<detections>/settings.json``
and evaluate's decision artifact keep so that `predict` re-runs detection exactly.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from ichinpaint import params as p
from ichinpaint.detection import hu
from ichinpaint.detection.strategies import STRATEGIES, Strategy, make_strategy
from ichinpaint.fastattention import ATTENTION_CHOICES

HU_RANGE = p.between(-1100, 4000)

# Record fields added after records were first written: an older record means their
# default (predict reads decision.json files written before the option existed).
ADDED_LATER: tuple[str, ...] = ("mirror",)

# The fields that decide the maps (with the model and the image size): the settings
# record, and the run fingerprint with `batch_size` (batches share the noise stream).
RECORD_FIELDS: tuple[str, ...] = (
    "strategy",
    "ddim_steps",
    "start_fraction",
    "jump_length",
    "jump_n_sample",
    "noise_levels",
    "sizes",
    "offsets",
    "combine",
    "seed",
    "sign",
    "mirror",
    "hu_gate",
    "gate_hu",
    "baseline_hu",
    "canvas",
)


@dataclass(frozen=True)
class DetectSettings:
    """Everything detection needs besides the model, the data and where to write."""

    strategy: str = p.setting(
        "onestep",
        "repaint: DDIM from noise with RePaint resampling (the study); partial: start from "
        "the original noised to start_fraction of T; onestep: one clean prediction per noise "
        "level; hu_threshold: no model, the share of each pixel in baseline_hu (baseline)",
        choices=STRATEGIES,
    )
    sizes: tuple[int, ...] = p.setting(
        (8, 32),
        "square sizes in px at 256 (scaled to the model's image size)",
        rule=p.at_least(1),
    )
    offsets: bool = p.setting(
        False, "also the half-square shifted grids (4 grids per size instead of 1)"
    )
    ddim_steps: int = p.setting(
        10, "DDIM steps over the whole schedule (repaint, partial)", rule=p.at_least(1)
    )
    start_fraction: float = p.setting(
        0.5,
        "partial: start the reverse process at this fraction of T",
        rule=p.between(0, 1, low_open=True),
    )
    jump_length: int = p.setting(1, "RePaint: DDIM steps re-noised per jump", rule=p.at_least(1))
    jump_n_sample: int = p.setting(
        1, "RePaint: times each jump segment is sampled (1 = no resampling)", rule=p.at_least(1)
    )
    noise_levels: tuple[float, ...] = p.setting(
        (0.5,),
        "onestep: noise levels (fractions of T) whose predictions are averaged",
        rule=p.between(0, 1, low_open=True),
    )
    combine: str = p.setting(
        "max",
        "how maps of the different sizes and shifts are combined per pixel",
        choices=("max", "mean"),
    )
    sign: str = p.setting(
        "positive",
        "absolute: |real - re-painted|; positive: only where the real slice is brighter "
        "(blood is hyperdense; cysts, atrophy and old infarcts are not)",
        choices=("absolute", "positive"),
    )
    mirror: bool = p.setting(
        False,
        "test-time augmentation: also re-paint the left-right mirrored slices and average "
        "the two maps (twice the UNet calls)",
    )
    hu_gate: bool = p.setting(
        True,
        "multiply the map by the share of native pixels within gate_hu (from the HU volume): "
        "differences on bone, calcification, CSF or fat count for nothing",
    )
    gate_hu: tuple[float, float] = p.setting(
        hu.GATE_BAND_HU,
        "HU band that could be blood (subacute 35-50, acute 50-90) for hu_gate",
        rule=HU_RANGE,
        metavar=("LOW", "HIGH"),
    )
    baseline_hu: tuple[float, float] = p.setting(
        hu.BASELINE_BAND_HU,
        "hu_threshold: the acute-blood HU band whose share per pixel is the map",
        rule=HU_RANGE,
        metavar=("LOW", "HIGH"),
    )
    batch_size: int = p.setting(
        64, "images per UNet call (mixed slices and passes)", rule=p.at_least(1)
    )
    seed: int = p.setting(0, "noise seed (per series: seed + series UID)", rule=p.SEED)
    splits: tuple[str, ...] = p.setting(
        ("val", "test"),
        "splits whose series are detected",
        rule=p.one_of(("train", "val", "test")),
    )
    device: str = p.setting("auto", "auto (CUDA when present), cpu, cuda or cuda:N")
    bf16: bool = p.setting(
        True, "bf16 weights and activations in the UNet (CUDA only; the CPU stays float32)"
    )
    channels_last: bool = p.setting(
        True, "channels_last memory format for the UNet (faster on GPU and on this CPU)"
    )
    compile: bool = p.setting(
        False, "torch.compile the UNet (pays a compile time; worth it on GPU for big runs)"
    )
    attention: str = p.setting(
        "einsum",
        "einsum: mediffusion's attention; sdpa: torch's scaled_dot_product_attention "
        "(same result within rounding, faster on GPU)",
        choices=ATTENTION_CHOICES,
    )
    n_overlays: int = p.setting(
        8,
        "overlay PNGs: half the highest-scoring bleed slices, half the highest-scoring "
        "healthy ones",
        rule=p.at_least(0),
    )
    backend: str = p.setting(
        "torch",
        "run the UNet in torch or in onnxruntime (CPU; needs `ichinpaint export-onnx`, "
        "the .onnx beside --model)",
        choices=("torch", "onnxruntime"),
    )
    canvas: int = p.setting(
        256,
        "the png stage's pad/crop canvas (png.canvas), for the maps' affine and the HU maps",
        rule=p.at_least(8),
        param="png.canvas",
    )

    def __post_init__(self) -> None:
        self.sampling()  # an unknown strategy fails here, not after the model has loaded

    def sampling(self) -> Strategy:
        """The re-painting strategy these settings describe."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return make_strategy(values.pop("strategy"), **values)

    @property
    def needs_model(self) -> bool:
        return self.sampling().needs_model

    @property
    def needs_hu(self) -> bool:
        return self.hu_gate or not self.needs_model

    def record(self) -> dict[str, Any]:
        """The fields that decide the maps, as plain JSON values (lists for tuples)."""
        values = dataclasses.asdict(self)
        return {
            k: list(values[k]) if isinstance(values[k], tuple) else values[k] for k in RECORD_FIELDS
        }

    def fingerprint_params(self) -> dict[str, Any]:
        """What a series' result depends on besides the model and the inputs."""
        return {**self.record(), "batch_size": self.batch_size}


def settings_from_record(record: dict[str, Any], **runtime: Any) -> DetectSettings:
    """The `DetectSettings` of a settings record; `runtime`: fields it does not keep
    (batch size, device, precision, backend...), else their defaults."""
    kinds = dict(p.declared_fields(DetectSettings))
    types = {field.name: kind for field, kind in kinds.items()}
    present = [k for k in RECORD_FIELDS if k in record or k not in ADDED_LATER]
    try:
        recorded = {key: _typed(record[key], types[key]) for key in present}
    except KeyError as error:
        raise ValueError(f"detect settings record lacks {error}") from error
    return DetectSettings(**recorded, **runtime)


def _typed(value: Any, kind: Any) -> Any:
    """A JSON value as the field's type (lists as tuples of their element type)."""
    if isinstance(value, list):
        element = typing.get_args(kind)[0]
        return tuple(element(v) for v in value)
    return kind(value)
