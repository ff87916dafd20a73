import numpy as np

from ichinpaint import volume


def test_slice_image_and_stack_round_trip():
    images = [np.arange(12).reshape(3, 4) + 100 * k for k in range(5)]
    vol = volume.stack_slices(images)
    assert vol.shape == (4, 3, 5)
    for k, im in enumerate(images):
        np.testing.assert_array_equal(volume.slice_image(vol, k), im)


def test_axial_affine_maps_voxels_to_ras():
    iop = [1, 0, 0, 0, 1, 0]
    ipp = [-100.0, -120.0, 30.0]
    aff = volume.affine_ras(ipp, iop, pixel_spacing=[0.5, 0.8], slice_step=[0, 0, 5])
    # voxel (col=10, row=20, k=2): LPS = ipp + 10*0.8 x + 20*0.5 y + 2*5 z
    lps = np.array([-100 + 8.0, -120 + 10.0, 30 + 10.0])
    ras = aff @ np.array([10, 20, 2, 1.0])
    np.testing.assert_allclose(ras[:3], [-lps[0], -lps[1], lps[2]])


def test_gantry_tilt_is_measured_from_the_step():
    iop = [1, 0, 0, 0, 1, 0]
    tilt = np.radians(15)
    step = [0, 5 * np.sin(tilt), 5 * np.cos(tilt)]
    assert abs(volume.gantry_tilt_deg(iop, step) - 15) < 1e-6
    assert volume.gantry_tilt_deg(iop, [0, 0, 5]) < 1e-9


def test_position_along_normal_orders_axial_slices_by_z():
    iop = [1, 0, 0, 0, 1, 0]
    assert volume.position_along_normal([0, 0, 10], iop) > volume.position_along_normal(
        [5, 5, 5], iop
    )
