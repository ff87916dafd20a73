import numpy as np
import pytest

from ichinpaint import grid


@pytest.mark.parametrize("size", [2, 4, 5, 16])
@pytest.mark.parametrize("shift_rows,shift_cols", [(False, False), (True, False), (True, True)])
def test_every_pixel_is_hidden_exactly_once_per_grid(size, shift_rows, shift_cols):
    img = 32
    total = np.zeros((img, img), int)
    for p in range(grid.N_PASSES):
        total += grid.pass_mask(img, grid.GridPass(size, shift_rows, shift_cols, p))
    assert np.all(total == 1)


def test_hidden_squares_keep_their_neighbours_visible():
    mask = grid.pass_mask(24, grid.GridPass(4, False, False, 0))
    # squares (0,0), (0,3), (3,0)... hidden; square (0,1) (cols 4..7) visible
    assert mask[0:4, 0:4].all() and not mask[0:4, 4:8].any() and not mask[4:8, 0:4].any()
    assert mask[0:4, 12:16].all()


def test_half_offset_shifts_the_squares():
    mask = grid.pass_mask(16, grid.GridPass(4, True, True, 4))  # squares with i%3==1, j%3==1
    # shifted grid: square 1 covers 2..5 on both axes
    assert mask[2:6, 2:6].all() and not mask[1, 2] and not mask[6, 2]


def test_all_passes_counts_the_study_grid():
    assert len(grid.all_passes([8, 16, 32, 64], offsets=True)) == 4 * 4 * 9
    assert len(grid.all_passes([8], offsets=False)) == 9


def test_passes_outside_the_brain_are_skipped():
    brain = np.zeros((32, 32), bool)
    brain[0:4, 0:4] = True  # only square (0, 0) of the size-4 grid
    kept = [gp for gp, _ in grid.passes_touching(brain, grid.all_passes([4], offsets=False))]
    assert [gp.pass_index for gp in kept] == [0]
