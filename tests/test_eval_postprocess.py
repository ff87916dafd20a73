import numpy as np
import pytest

from ichinpaint.evaluation import postprocess as pp
from ichinpaint.volume import stack_slices


def disc_mask(size: int = 32, radius: float = 12) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    return (yy - c) ** 2 + (xx - c) ** 2 <= radius**2


def test_erosion_removes_rim_detection_and_keeps_interior():
    mask = disc_mask()
    anomaly = np.zeros(mask.shape, np.float32)
    rim = mask & ~pp.erode_mask(mask, 1)
    anomaly[rim] = 1.0  # skull-adjacent ring, one pixel wide
    anomaly[14:18, 14:18] = 1.0  # a 4x4 blob in the middle
    cleaned = pp.postprocess_slice(anomaly, mask, erosion_px=2, median_size=1)
    assert cleaned[rim].max() == 0
    assert (cleaned[14:18, 14:18] == 1).all()
    labels = pp.detect_components(cleaned, 0.5, min_component_px=1)
    assert labels.max() == 1
    # Without erosion the ring is a detection of its own.
    raw = pp.postprocess_slice(anomaly, mask, erosion_px=0, median_size=1)
    assert pp.detect_components(raw, 0.5, min_component_px=1).max() == 2


def test_erode_mask_is_a_disc_of_the_given_radius():
    mask = np.zeros((21, 21), bool)
    mask[5:16, 5:16] = True
    assert pp.erode_mask(mask, 2).sum() == 7 * 7
    assert (pp.erode_mask(mask, 0) == mask).all()


def test_median_filter_removes_isolated_hot_pixel_but_not_a_blob():
    mask = np.ones((20, 20), bool)
    anomaly = np.zeros((20, 20), np.float32)
    anomaly[3, 3] = 5.0
    anomaly[10:15, 10:15] = 1.0
    cleaned = pp.postprocess_slice(anomaly, mask, erosion_px=0, median_size=3)
    assert cleaned[3, 3] == 0
    assert cleaned[12, 12] == 1.0


def test_small_components_are_dropped_and_rest_relabelled():
    anomaly = np.zeros((10, 10))
    anomaly[0, 0] = 1  # 1 px
    anomaly[5:7, 5:7] = 1  # 4 px
    anomaly[0:3, 8] = 1  # 3 px
    labels = pp.detect_components(anomaly, 0.5, min_component_px=3)
    assert labels.max() == 2
    assert labels[0, 0] == 0
    assert sorted(np.bincount(labels.ravel())[1:]) == [3, 4]
    assert pp.detect_components(np.zeros((4, 4)), 0.5, min_component_px=1).max() == 0


def test_components_are_eight_connected_and_threshold_is_strict():
    anomaly = np.eye(4)
    assert pp.detect_components(anomaly, 0.5, min_component_px=4).max() == 1
    assert pp.detect_components(anomaly, 1.0, min_component_px=1).max() == 0


def test_consistency_3d_keeps_only_detections_confirmed_on_a_neighbour():
    labels = np.zeros((3, 8, 8), np.int32)
    labels[0, 1:3, 1:3] = 1  # overlaps slice 1's blob
    labels[1, 2:4, 2:4] = 1
    labels[1, 6, 6] = 2  # alone
    labels[2, 6:8, 0:2] = 1  # nothing on slice 1 there
    out = pp.consistency_3d(labels)
    assert out[0].max() == 1 and out[1].max() == 1
    assert out[1, 6, 6] == 0
    assert out[2].max() == 0
    assert pp.consistency_3d(labels[:1]).max() == 0


def test_postprocess_series_runs_the_chain_with_3d_check():
    mask = disc_mask(16, 7)
    anomaly = np.zeros((3, 16, 16), np.float32)
    anomaly[0, 6:10, 6:10] = 1.0
    anomaly[1, 7:11, 7:11] = 1.0
    anomaly[2, 3:5, 3:6] = 1.0  # inside, single-slice, 6 px
    masks = np.stack([mask] * 3)
    cleaned, labels = pp.postprocess_series(
        anomaly, masks, erosion_px=1, median_size=1, threshold=0.5, min_component_px=4
    )
    assert [labels[k].max() for k in range(3)] == [1, 1, 1]
    _, labels3d = pp.postprocess_series(
        anomaly,
        masks,
        erosion_px=1,
        median_size=1,
        threshold=0.5,
        min_component_px=4,
        consistency=True,
    )
    assert [labels3d[k].max() for k in range(3)] == [1, 1, 0]
    with pytest.raises(ValueError, match="must be equal"):
        pp.postprocess_series(
            anomaly, masks[:2], erosion_px=1, median_size=1, threshold=0.5, min_component_px=1
        )


def test_slice_scores_by_hand():
    mask = np.zeros((10, 10), bool)
    mask[:, :5] = True  # 50 brain pixels
    anomaly = np.zeros((10, 10))
    anomaly[0, 0] = 0.9
    anomaly[1, 0] = 0.15
    anomaly[:, 9] = 7.0  # outside the brain: ignored
    s = pp.slice_scores(anomaly, mask)
    assert s["score_max"] == pytest.approx(0.9)
    assert s["score_mean"] == pytest.approx(1.05 / 50)
    assert s["score_top1pct"] == pytest.approx(0.9)  # ceil(0.5) = 1 pixel
    assert s["score_area_0.1"] == pytest.approx(2 / 50)
    assert s["score_area_0.2"] == pytest.approx(1 / 50)
    assert set(s) == set(pp.SCORE_NAMES)
    assert pp.slice_scores(anomaly, np.zeros((10, 10), bool)) == dict.fromkeys(pp.SCORE_NAMES, 0.0)


def test_load_detection_reads_the_volume_convention(tmp_path):
    import nibabel as nib

    images = [np.arange(12, dtype=np.float32).reshape(3, 4) + k for k in range(2)]
    path = tmp_path / "s.nii.gz"
    nib.save(nib.Nifti1Image(stack_slices(images), np.eye(4)), path)
    stack = pp.load_detection(path)
    assert stack.shape == (2, 3, 4)
    np.testing.assert_array_equal(stack[1], images[1])
