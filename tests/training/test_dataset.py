import h5py
import numpy as np
import pytest

from training.dataset import DatasetError, read_labelled, write_dataset
from training.simulators.a import simulate


@pytest.fixture(scope="module")
def small():
    return simulate({-2: 3, 0: 3, 3: 3, 5: 3}, seed=2)


def test_round_trip(small, tmp_path):
    data = read_labelled(write_dataset(tmp_path / "d.h5", small))
    np.testing.assert_array_equal(data.detectid, small.detectid)
    np.testing.assert_array_equal(data.im_sum, small.im_sum)
    np.testing.assert_array_equal(data.vis_class, small.vis_class)
    np.testing.assert_array_equal(data.is_real, small.vis_class >= 3)
    np.testing.assert_array_equal(data.family, small.family)
    assert data.summary()["real"] == 6


def rewrite(path, table, field, values):
    with h5py.File(path, "a") as handle:
        data = handle[table][...]
        del handle[table]
        if field is None:
            return
        data[field] = values
        handle.create_dataset(table, data=data)


def test_missing_table_is_named(small, tmp_path):
    path = write_dataset(tmp_path / "d.h5", small)
    rewrite(path, "Labels", None, None)
    with pytest.raises(DatasetError, match=r"d\.h5: table 'Labels' is missing"):
        read_labelled(path)


def test_unknown_class_is_named(small, tmp_path):
    path = write_dataset(tmp_path / "d.h5", small)
    rewrite(path, "Labels", "vis_class", np.full(len(small), 7))
    with pytest.raises(DatasetError, match=r"d\.h5: Labels/vis_class has unknown classes \[7\]"):
        read_labelled(path)


def test_nan_is_named_with_the_detectid(small, tmp_path):
    path = write_dataset(tmp_path / "d.h5", small)
    im_sum = small.im_sum.copy()
    im_sum[4, 2, 2] = np.nan
    rewrite(path, "FiberImages", "im_sum", im_sum)
    with pytest.raises(DatasetError, match=rf"FiberImages/im_sum has NaN.*{small.detectid[4]}"):
        read_labelled(path)


def test_wrong_shape_is_named(tmp_path):
    path = tmp_path / "d.h5"
    table = np.zeros(2, dtype=[("detectid", "<i8"), ("im_sum", "<f4", (9, 32))])
    with h5py.File(path, "w") as handle:
        handle.create_dataset("FiberImages", data=table)
    with pytest.raises(DatasetError, match=r"FiberImages/im_sum has shape \(9, 32\)"):
        read_labelled(path)


def test_missing_field_label_without_image_and_duplicates(small, tmp_path):
    path = write_dataset(tmp_path / "d.h5", small)
    rewrite(path, "Labels", "detectid", small.detectid + 1000)
    with pytest.raises(DatasetError, match="has no row in"):
        read_labelled(path)
    path = write_dataset(tmp_path / "e.h5", small)
    rewrite(path, "FiberImages", "detectid", np.zeros(len(small)))
    with pytest.raises(DatasetError, match="FiberImages/detectid has duplicate ids"):
        read_labelled(path)
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("FiberImages", data=np.zeros(2, dtype=[("detectid", "<i8")]))
    with pytest.raises(DatasetError, match="FiberImages/im_sum is missing"):
        read_labelled(path)


def test_not_hdf5_and_no_file(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(DatasetError, match=r"junk\.h5: not a readable HDF5 file"):
        read_labelled(junk)
    with pytest.raises(DatasetError, match="no such file"):
        read_labelled(tmp_path / "absent.h5")


def test_labels_in_a_separate_file_may_cover_a_subset(small, tmp_path):
    images = write_dataset(tmp_path / "images.h5", small)
    labels = tmp_path / "labels.h5"
    with h5py.File(images, "r") as source, h5py.File(labels, "w") as target:
        target.create_dataset("Labels", data=source["Labels"][::2][["detectid", "vis_class"]])
    data = read_labelled(images, labels)
    np.testing.assert_array_equal(data.detectid, small.detectid[::2])
    np.testing.assert_array_equal(data.im_sum, small.im_sum[::2])
    assert np.isnan(data.sn).all()


def test_ground_truth_is_stored_and_must_agree_with_the_class(small, tmp_path):
    path = write_dataset(tmp_path / "d.h5", small)
    with h5py.File(path, "r") as handle:
        np.testing.assert_array_equal(handle["Labels"]["is_real"], small.vis_class >= 3)
    rewrite(path, "Labels", "is_real", small.vis_class < 3)
    with pytest.raises(DatasetError, match="Labels/is_real contradicts vis_class"):
        read_labelled(path)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([261.0], "unknown classes \\[261\\]"),
        ([3.7], "NaN or non-integer"),
        ([np.nan], "NaN or non-integer"),
    ],
)
def test_classes_are_checked_before_any_cast(small, tmp_path, values, message):
    path = write_dataset(tmp_path / "d.h5", small)
    labels = np.zeros(len(small), dtype=[("detectid", "<i8"), ("vis_class", "<f8")])
    labels["detectid"], labels["vis_class"] = small.detectid, small.vis_class
    labels["vis_class"][0] = values[0]
    with h5py.File(path, "a") as handle:
        del handle["Labels"]
        handle.create_dataset("Labels", data=labels)
    with pytest.raises(DatasetError, match=rf"Labels/vis_class has {message}"):
        read_labelled(path)
