import numpy as np
import pytest

from ichinpaint.windowing import (
    area_weights,
    brain_window,
    from_model_grid,
    midrange_fraction,
    pad_or_crop_square,
    resize,
    to_model_grid,
)


def test_brain_window_maps_0_and_80_hu_to_the_ends_and_clips():
    hu = np.array([-1000, 0, 40, 80, 1500, 20], dtype=np.int16)
    out = brain_window(hu)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [0, 0, 128, 255, 255, 64])


def test_pad_or_crop_square_centres_each_axis_on_its_own():
    image = np.arange(3 * 7).reshape(3, 7)  # 3 rows (pad to 5), 7 cols (crop to 5)
    out = pad_or_crop_square(image, 5, fill=-1)
    assert out.shape == (5, 5)
    np.testing.assert_array_equal(out[0], [-1] * 5)
    np.testing.assert_array_equal(out[4], [-1] * 5)
    np.testing.assert_array_equal(out[1:4], image[:, 1:6])


def test_pad_keeps_the_centre_pixel_in_the_centre():
    image = np.zeros((41, 61))
    image[20, 30] = 1
    out = pad_or_crop_square(image, 81)
    assert tuple(np.argwhere(out == 1)[0]) == (40, 40)


def test_area_resize_is_the_block_mean_for_integer_factors():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (8, 8))
    out = resize(image, (2, 2), mode="area")
    np.testing.assert_allclose(out, image.reshape(2, 4, 2, 4).mean(axis=(1, 3)))


def test_area_weights_conserve_intensity_for_any_ratio():
    weights = area_weights(10, 3)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    # every input pixel is used with total weight n_out / n_in (the mean is preserved)
    np.testing.assert_allclose(weights.sum(axis=0), 0.3)


def test_to_model_grid_uint8_area_and_nearest_labels():
    image = np.zeros((6, 4), dtype=np.uint8)
    image[:3] = 200  # top half bright: [row, col] order must survive
    out = to_model_grid(image, canvas=6, img_size=3)
    assert out.dtype == np.uint8 and out.shape == (3, 3)
    assert out[0].min() > out[2].max()
    labels = np.zeros((64, 64), dtype=np.uint8)
    labels[10:30, 5:20] = 3
    labels[40:50, 40:60] = 5
    grid = to_model_grid(labels, canvas=64, img_size=16, mode="nearest")
    assert grid.dtype == np.uint8 and set(np.unique(grid)) == {0, 3, 5}


def test_from_model_grid_undoes_pad_and_crop():
    rng = np.random.default_rng(1)
    native = rng.integers(0, 255, (50, 70)).astype(np.uint8)  # rows padded, cols cropped at 60
    grid = to_model_grid(native, canvas=60, img_size=60, mode="nearest")
    back = from_model_grid(grid, canvas=60, native_shape=(50, 70), mode="nearest", fill=7)
    np.testing.assert_array_equal(back[:, 5:65], native[:, 5:65])
    assert (back[:, :5] == 7).all() and (back[:, 65:] == 7).all()


def test_from_model_grid_linear_upsampling_of_a_constant_is_constant():
    back = from_model_grid(np.full((16, 16), 0.25), canvas=64, native_shape=(64, 64))
    np.testing.assert_allclose(back, 0.25)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown resize mode"):
        to_model_grid(np.zeros((4, 4)), 4, 2, mode="bicubic")


def test_midrange_fraction_counts_in_brain_pixels_strictly_inside_the_window():
    hu = np.array([[-5, 0, 10, 79], [80, 40, 40, 1000]])
    brain = np.array([[1, 1, 1, 1], [1, 1, 0, 1]])
    # inside brain and 0 < HU < 80: 10, 79, 40 -> 3 of 8 pixels
    assert midrange_fraction(hu, brain) == pytest.approx(3 / 8)
    with pytest.raises(ValueError, match="differ"):
        midrange_fraction(hu, brain[:, :2])
