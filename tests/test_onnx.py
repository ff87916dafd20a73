"""ONNX export of the inpainter's UNet: parity with torch, dynamic batch, the detect backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_fixtures import tiny_inpainter

from ichinpaint import cli, model
from ichinpaint.detection.inputs import SeriesImages
from ichinpaint.detection.sampler import InpaintSampler, UNetRunner
from ichinpaint.detection.series import detect_series
from ichinpaint.detection.settings import DetectSettings
from ichinpaint.onnxunet import export_unet, onnx_net, parity

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    module, spec = tiny_inpainter(16)
    # a real (non-default) weight state: the untrained output layer is zero-initialised
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    path = tmp_path_factory.mktemp("onnx") / "inpainter.onnx"
    export_unet(module, path)
    return module, spec, path


def real_slice_inputs(folder, img_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A real synthetic CT slice (DICOM -> HU -> brain window -> model grid), as detection feeds it."""
    import pydicom

    from ichinpaint.dicom import decode_hu, quiet_pydicom
    from ichinpaint.synthetic import write_dataset
    from ichinpaint.windowing import brain_window, to_model_grid

    write_dataset(folder, n_patients=1, n_slices=3, matrix=64, seed=3, sheet=False)
    path = sorted((folder / "stage_2_train").glob("*.dcm"))[0]
    with quiet_pydicom():
        hu = decode_hu(pydicom.dcmread(path)).astype(float)
    png = to_model_grid(brain_window(hu), 64, img_size)
    image = torch.from_numpy(png.astype(np.float32) / 127.5 - 1)[None, None]
    brain = (image > -0.9).float()
    mask = torch.zeros_like(image)
    mask[..., 4:8, 4:8] = 1
    concat = model.make_conditioning(image, brain, image, image, mask)
    return image, torch.tensor([500]), concat


def test_onnx_matches_torch_on_random_inputs_of_several_batch_sizes(exported):
    module, _, path = exported
    for batch in (1, 3, 7):  # the batch axis is dynamic
        assert parity(module, path, batch=batch, seed=batch) <= 1e-4


def test_onnx_matches_torch_on_a_real_slice(exported, tmp_path):
    module, spec, path = exported
    inputs = real_slice_inputs(tmp_path, spec.img_size)
    out = module.model(inputs[0], inputs[1], concat=inputs[2])
    assert out.abs().max() > 1e-3  # a non-trivial output to compare
    assert parity(module, path, inputs=inputs) <= 1e-4


def test_detection_with_onnxruntime_equals_torch(exported):
    module, spec, path = exported
    n = 3
    rng = np.random.default_rng(0)
    images = SeriesImages(
        image=rng.uniform(-1, 1, (n, 16, 16)).astype(np.float32),
        brain=np.pad(np.ones((n, 10, 10), np.float32), ((0, 0), (3, 3), (3, 3))),
        above=rng.uniform(-1, 1, (n, 16, 16)).astype(np.float32),
        below=rng.uniform(-1, 1, (n, 16, 16)).astype(np.float32),
        slice_index=[0, 1, 2],
    )
    settings = DetectSettings(
        strategy="onestep", sizes=(64,), offsets=False, batch_size=8, sign="absolute"
    )
    maps = []
    for net in (None, onnx_net(path)):
        runner = UNetRunner(module, precision="fp32", channels_last=False, net=net)
        sampler = InpaintSampler(module.diffusion, runner, ddim_steps=10)
        generator = torch.Generator().manual_seed(0)
        maps.append(detect_series(images, sampler, settings, generator))
        assert runner.forwards > 0
    assert np.abs(maps[0] - maps[1]).max() <= 1e-4


def test_export_stage_writes_beside_the_checkpoint(tmp_path):
    module, spec = tiny_inpainter(16)
    ckpt = tmp_path / "inpainter.ckpt"
    model.save_inpainter(ckpt, module.state_dict(), spec)
    assert cli.main(["export-onnx", "--model", str(ckpt)]) == 0
    assert (tmp_path / "inpainter.onnx").is_file()


def test_detect_stage_with_the_onnxruntime_backend_writes_the_torch_maps(tmp_path):
    import json

    import nibabel as nib
    from test_detect import CANVAS, write_dataset

    module, spec = tiny_inpainter(16)
    with torch.no_grad():  # non-zero output layer, so the network's output matters
        for p in module.model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    write_dataset(tmp_path)
    ckpt = tmp_path / "models/inpainter.ckpt"
    model.save_inpainter(ckpt, module.state_dict(), spec)
    assert cli.main(["export-onnx", "--model", str(ckpt)]) == 0
    maps = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / backend
        argv = [
            "detect", "--slices", str(tmp_path / "data/processed/slices.csv"), "--model", str(ckpt),
            "--nifti", str(tmp_path / "data/interim/nifti"), "--canvas", str(CANVAS),
            "--root", str(tmp_path), "--out", str(out), "--metrics", str(tmp_path / f"{backend}.json"),
            "--sizes", "64", "--batch_size", "16", "--n_overlays", "0", "--backend", backend,
            "--device", "cpu",
        ]  # fmt: skip
        assert cli.main(argv) == 0
        maps[backend] = {p.name: np.asarray(nib.load(p).dataobj) for p in out.glob("*.nii.gz")}
        settings = json.loads((out / "settings.json").read_text())
        assert settings["sizes"] == [64] and len(settings["model_sha256"]) == 64
    assert maps["torch"].keys() == maps["onnxruntime"].keys() and maps["torch"]
    for name, torch_map in maps["torch"].items():
        assert np.abs(torch_map - maps["onnxruntime"][name]).max() <= 1e-4
