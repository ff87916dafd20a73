import json

import pytest
import torch

from ichinpaint import model


def test_conditioning_blanks_only_the_hidden_region():
    img = torch.rand(2, 1, 8, 8) * 2 - 1
    hidden = torch.zeros(2, 1, 8, 8)
    hidden[:, :, 2:4, 2:4] = 1
    ones = torch.ones_like(img)
    cond = model.make_conditioning(img, ones, -ones, ones * 0.5, hidden)
    assert cond.shape == (2, len(model.CONDITIONING), 8, 8)
    known = cond[:, model.CONDITIONING.index("known_image")]
    assert torch.all(known[:, 2:4, 2:4] == model.BLANK_VALUE)
    outside = hidden[:, 0] == 0
    assert torch.equal(known[outside], img[:, 0][outside])
    assert torch.equal(cond[:, -1:], hidden)


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    spec = model.InpainterSpec(
        img_size=16, model_channels=32, channel_mult=(1, 2), attention_resolutions=()
    )
    module = model.build_module(spec).eval()
    ckpt = tmp_path / "inpainter.ckpt"
    model.save_inpainter(ckpt, module.state_dict(), spec, extra={"note": "test"})
    meta = json.loads(ckpt.with_suffix(".json").read_text())
    assert meta["contract"]["conditioning"] == list(model.CONDITIONING)
    loaded, loaded_spec = model.load_inpainter(ckpt)
    assert loaded_spec == spec
    x = torch.randn(2, 1, 16, 16)
    c = torch.randn(2, len(model.CONDITIONING), 16, 16)
    t = torch.tensor([10, 500])
    with torch.inference_mode():
        a = model.unet_forward(module, x, t, c)
        b = model.unet_forward(loaded, x, t, c)
    assert torch.equal(a, b)


def test_scaled_sizes_follow_the_image_size():
    assert model.scaled_sizes([8, 16, 32, 64], 256) == [8, 16, 32, 64]
    assert model.scaled_sizes([8, 16, 32, 64], 64) == [2, 4, 8, 16]
    assert model.scaled_sizes([8, 16], 32) == [2]


def test_neighbours_modes_show_the_adjacent_slices_whole_hidden_or_not_at_all():
    img = torch.rand(2, 1, 8, 8) * 2 - 1
    above, below = torch.rand_like(img), -torch.rand_like(img)
    hidden = torch.zeros_like(img)
    hidden[:, :, 2:5, 3:6] = 1
    ones = torch.ones_like(img)
    channel = {name: model.CONDITIONING.index(name) for name in ("above", "below")}
    outside = hidden[:, 0] == 0
    for mode in model.NEIGHBOURS:
        cond = model.make_conditioning(img, ones, above, below, hidden, mode)
        for name, source in (("above", above), ("below", below)):
            shown = cond[:, channel[name]]
            if mode == "keep":
                assert torch.equal(shown, source[:, 0])
            elif mode == "hide":
                assert torch.all(shown[hidden[:, 0] == 1] == model.BLANK_VALUE)
                assert torch.equal(shown[outside], source[:, 0][outside])
            else:
                assert torch.all(shown == model.BLANK_VALUE)
    try:
        model.make_conditioning(img, ones, above, below, hidden, "peek")
    except ValueError as error:
        assert "peek" in str(error)
    else:
        raise AssertionError("an unknown neighbours mode was accepted")


def test_the_neighbours_contract_travels_with_the_checkpoint(tmp_path):
    spec = model.InpainterSpec(
        img_size=16, model_channels=32, channel_mult=(1, 2), attention_resolutions=(),
        neighbours="hide",
    )  # fmt: skip
    module = model.build_module(spec)
    ckpt = tmp_path / "inpainter.ckpt"
    model.save_inpainter(ckpt, module.state_dict(), spec)
    assert json.loads(ckpt.with_suffix(".json").read_text())["contract"]["neighbours"] == "hide"
    loaded, _ = model.load_inpainter(ckpt)
    assert model.spec_of(loaded).neighbours == "hide"
    assert model.spec_of(model.build_module(model.InpainterSpec(img_size=16))).neighbours == "keep"
    # A spec written before the option existed loads as the old behaviour.
    old = {k: v for k, v in spec.to_dict().items() if k != "neighbours"}
    assert model.InpainterSpec.from_dict(old).neighbours == "keep"


def test_detect_settings_record_round_trips_and_old_records_mean_no_mirror():
    from ichinpaint.detection.record import settings_from_record, settings_record
    from ichinpaint.detection.settings import DetectSettings

    settings = DetectSettings(strategy="onestep", noise_levels=(0.4, 0.6), mirror=True, canvas=256)
    record = settings_record(settings, img_size=64, model_sha256="0" * 64)
    assert settings_from_record(record, batch_size=settings.batch_size) == settings
    del record["mirror"]
    assert not settings_from_record(record, batch_size=settings.batch_size).mirror


def test_white_noise_is_torchs_stream_so_old_runs_reproduce():
    a = model.draw_noise((2, 1, 8, 8), 1, torch.Generator().manual_seed(3))
    assert torch.equal(a, torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(3)))


def test_coarse_noise_has_unit_variance_everywhere_and_cell_sized_blobs():
    gen = torch.Generator().manual_seed(0)
    noise = model.draw_noise((4000, 1, 16, 16), 8, gen)
    assert noise.shape == (4000, 1, 16, 16) and noise.dtype == torch.float32
    var = noise.var(dim=0)  # per pixel, over draws
    assert var.min() > 0.9 and var.max() < 1.1, (var.min(), var.max())
    assert abs(float(noise.mean())) < 0.02
    # Neighbouring pixels move together (white noise: correlation 0), pixels a cell apart
    # much less.
    flat = noise[:, 0]
    near = torch.corrcoef(torch.stack([flat[:, 5, 5], flat[:, 5, 6]]))[0, 1]
    far = torch.corrcoef(torch.stack([flat[:, 5, 1], flat[:, 5, 13]]))[0, 1]
    assert near > 0.8 and abs(far) < 0.1, (near, far)
    white = model.draw_noise((4000, 1, 16, 16), 1, gen)[:, 0]
    assert abs(torch.corrcoef(torch.stack([white[:, 5, 5], white[:, 5, 6]]))[0, 1]) < 0.1


def test_the_noise_contract_travels_with_the_checkpoint(tmp_path):
    spec = model.InpainterSpec(
        img_size=16, model_channels=32, channel_mult=(1, 2), attention_resolutions=(),
        noise_cell=4,
    )  # fmt: skip
    ckpt = tmp_path / "inpainter.ckpt"
    model.save_inpainter(ckpt, model.build_module(spec).state_dict(), spec)
    assert json.loads(ckpt.with_suffix(".json").read_text())["contract"]["noise_cell"] == 4
    loaded, _ = model.load_inpainter(ckpt)
    assert model.spec_of(loaded).noise_cell == 4
    old = {k: v for k, v in spec.to_dict().items() if k != "noise_cell"}
    assert model.InpainterSpec.from_dict(old).noise_cell == 1  # white, as before
    with pytest.raises(ValueError, match="noise_cell"):
        model.InpainterSpec(img_size=16, noise_cell=0)
