"""Brain extraction on a head phantom built in the volume conventions, and the model path
with a real TorchScript module."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from ichinpaint import volume
from ichinpaint.preprocess import brainmask

# torch.jit is deprecated in favour of torch.export but is the documented model format.
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def phantom_head(
    cols: int = 120,
    rows: int = 100,
    n_slices: int = 10,
    pixel_mm: float = 1.0,
    slice_mm: float = 5.0,
    tilt_deg: float = 0.0,
    ventricle_hu: float = 5.0,
    noise_hu: float = 5.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """An ellipsoid head in ``data[col, row, k]`` with its RAS affine and tissue masks.

    Air outside, 3 mm scalp, 5 mm skull (1000 HU), 3 mm CSF rim, parenchyma (32 HU),
    ventricles; the intracranial space (everything inside the skull) is the truth.
    Gantry tilt shifts each slice along the rows, as a tilted acquisition does.
    """
    rng = np.random.default_rng(seed)
    col = np.arange(cols)[:, None, None]
    row = np.arange(rows)[None, :, None]
    k = np.arange(n_slices)[None, None, :]
    tilt = np.radians(tilt_deg)
    x = (col - cols / 2) * pixel_mm
    y = (row - rows / 2) * pixel_mm + (k - n_slices / 2) * slice_mm * np.sin(tilt)
    z = (k - n_slices / 2) * slice_mm * np.cos(tilt)
    semi = np.array([cols * 0.42, rows * 0.4, 40.0]) * np.array([pixel_mm, pixel_mm, 1.0])
    rho = np.sqrt((x / semi[0]) ** 2 + (y / semi[1]) ** 2 + (z / semi[2]) ** 2)
    mm = 1.0 / semi[0]  # radial mm, roughly
    hu = np.full(rho.shape, -1000.0)
    tissues = {
        "scalp": (rho >= 1 + 5 * mm) & (rho < 1 + 8 * mm),
        "skull": (rho >= 1) & (rho < 1 + 5 * mm),
        "intracranial": rho < 1,
    }
    hu[tissues["scalp"]] = 40.0
    hu[tissues["skull"]] = 1000.0
    hu[tissues["intracranial"]] = 8.0
    hu[rho < 1 - 3 * mm] = 32.0
    tissues["ventricles"] = np.sqrt((x / 12) ** 2 + ((y - 3) / 20) ** 2 + (z / 10) ** 2) < 1
    hu[tissues["ventricles"]] = ventricle_hu
    hu += rng.normal(0.0, noise_hu, hu.shape)
    step = [0.0, slice_mm * np.sin(tilt), slice_mm * np.cos(tilt)]
    first = [-(cols / 2) * pixel_mm, y[0, 0, 0], z[0, 0, 0]]  # LPS of voxel (0, 0, 0)
    affine = volume.affine_ras(first, [1, 0, 0, 0, 1, 0], [pixel_mm, pixel_mm], step)
    return np.rint(hu).astype(np.int16), affine, tissues


@pytest.mark.parametrize(
    "geometry",
    [
        {},  # 1 mm pixels, 5 mm slices
        {"tilt_deg": 20.0},
        {"cols": 200, "rows": 180, "pixel_mm": 0.5},  # RSNA-like fine in-plane sampling
    ],
)
def test_threshold_method_recovers_the_intracranial_space(geometry):
    hu, affine, tissues = phantom_head(**geometry)
    mask = brainmask.extract_brain(hu, affine, method="threshold")
    assert mask.dtype == np.uint8 and mask.shape == hu.shape
    assert brainmask.dice(mask, tissues["intracranial"]) > 0.97
    assert not mask[tissues["skull"] | tissues["scalp"]].any()


def test_dark_ventricles_blood_and_calcification_stay_inside_the_mask():
    hu, affine, tissues = phantom_head(ventricle_hu=-15.0)  # below the 0 HU threshold
    blob = np.zeros(hu.shape, dtype=bool)
    blob[40:50, 60:68, 4:6] = True  # an acute bleed
    hu[blob] = 75
    calcification = np.zeros(hu.shape, dtype=bool)
    calcification[75:78, 45:48, 5] = True
    hu[calcification] = 250
    mask = brainmask.extract_brain(hu, affine).astype(bool)
    assert mask[tissues["ventricles"]].all()
    assert mask[blob].all()
    assert mask[calcification].all()


def test_air_only_volume_gives_an_empty_mask():
    hu = np.full((20, 20, 3), -1000, dtype=np.int16)
    mask = brainmask.extract_brain(hu, np.eye(4))
    assert mask.shape == hu.shape and mask.sum() == 0


def test_voxel_spacing_reads_the_affine_columns():
    affine = volume.affine_ras([0, 0, 0], [1, 0, 0, 0, 1, 0], [0.5, 0.8], [0, 1.0, 4.8])
    np.testing.assert_allclose(brainmask.voxel_spacing(affine), [0.8, 0.5, np.hypot(1.0, 4.8)])


def test_dice():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert brainmask.dice(a, b) == 1.0
    a[:2] = True
    b[1:3] = True
    assert brainmask.dice(a, b) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shapes"):
        brainmask.dice(a, b[:2])


def test_methods_registry_dispatches_and_checks_shapes(monkeypatch):
    with pytest.raises(ValueError, match="unknown brain-mask method"):
        brainmask.extract_brain(np.zeros((2, 2, 2)), np.eye(4), method="bet")
    monkeypatch.setitem(brainmask.METHODS, "everything", lambda hu, affine: np.ones(hu.shape))
    assert brainmask.extract_brain(np.zeros((2, 3, 4)), np.eye(4), method="everything").all()
    monkeypatch.setitem(brainmask.METHODS, "wrong", lambda hu, affine: np.ones((2, 2)))
    with pytest.raises(ValueError, match="returned shape"):
        brainmask.extract_brain(np.zeros((2, 3, 4)), np.eye(4), method="wrong")


class SoftTissueProbability(torch.nn.Module):
    """A stand-in extractor: probability 1 where the windowed input is soft tissue (0 < HU < 100)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x > 0.05) & (x < 0.95)).float()


class TopHalfLogits(torch.nn.Module):
    """Logits that say 'brain' in the top half of the image only: catches transposed axes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.full_like(x, -10.0)
        logits[:, :, : x.shape[2] // 2, :] = 10.0
        return logits


def script(module: torch.nn.Module, path) -> str:
    torch.jit.save(torch.jit.script(module), str(path))
    brainmask.load_model.cache_clear()
    return str(path)


def test_model_method_applies_a_torchscript_module_per_slice(tmp_path):
    hu, affine, _ = phantom_head(cols=60, rows=50, n_slices=4, noise_hu=0.0)
    path = script(SoftTissueProbability(), tmp_path / "soft.pt")
    mask = brainmask.extract_brain(
        hu, affine, method="model", model_path=path, model_size=60, model_output="probabilities"
    )
    windowed = np.clip(hu / 100.0, 0, 1)
    np.testing.assert_array_equal(mask, (windowed > 0.05) & (windowed < 0.95))


def test_model_method_keeps_row_and_column_orientation(tmp_path):
    hu = np.zeros((60, 50, 3), dtype=np.int16)  # 60 columns, 50 rows: padded to 60 x 60
    path = script(TopHalfLogits(), tmp_path / "top.pt")
    mask = brainmask.extract_brain(hu, np.eye(4), method="model", model_path=path, model_size=30)
    # canvas rows 0..29 are padding rows 0..4 plus native rows 0..24
    assert mask[:, :25, :].all()
    assert not mask[:, 25:, :].any()


def test_model_method_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        brainmask.extract_brain(
            np.zeros((4, 4, 1)), np.eye(4), method="model", model_path=str(tmp_path / "nothing.pt")
        )
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.pt"):
        brainmask.extract_brain(
            np.zeros((4, 4, 1)), np.eye(4), method="model", model_path=str(junk)
        )


def test_fill_holes_matches_scipy():
    rng = np.random.default_rng(3)
    mask = rng.random((30, 25, 6)) < 0.55
    np.testing.assert_array_equal(brainmask.fill_holes(mask), ndimage.binary_fill_holes(mask))
