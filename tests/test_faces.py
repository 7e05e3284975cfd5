import numpy as np

from agender.faces import Estimates, Faces


def test_faces_mask_keeps_parallel_arrays_aligned():
    f = Faces(xyxy=[[0, 0, 10, 10], [5, 5, 30, 30]], det_conf=[0.9, 0.5])
    f = f.with_estimates(Estimates(age=[20, 40], p_male=[0.1, 0.9]))
    big = f[f.area > 200]
    assert len(big) == 1
    assert big.age[0] == 40 and big.gender == ["male"]
    assert np.isnan(big.age_std[0])


def test_face_label_reads_like_the_overlay():
    f = Faces(xyxy=[[0, 0, 10, 10]], det_conf=[1]).with_estimates(Estimates(age=[27.4], p_male=[0.2], age_std=[5.6]))
    assert next(iter(f)).label == "F 27±6"


def test_tracked_face_label_shows_the_track_means_not_this_frames_values():
    f = Faces(xyxy=[[0, 0, 10, 10]], det_conf=[1], track_id=[2])
    f = f.with_estimates(Estimates(age=[30.0], p_male=[0.4], age_std=[9.7]))
    f.age_avg[:], f.p_male_avg[:], f.age_std_avg[:] = 40.2, 0.9, 6.2
    assert next(iter(f)).label == "M 40±6"
