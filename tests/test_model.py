import json

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
