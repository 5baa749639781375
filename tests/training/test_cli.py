import h5py
import numpy as np
import pytest

from training.cli import main


def test_simulate_writes_the_requested_mix_with_fiber_images(tmp_path):
    out = tmp_path / "sim.h5"
    main(
        [
            "simulate",
            "--out",
            str(out),
            "--class-counts",
            "5:3,-2:2",
            "--seed",
            "1",
            "--with-fibers",
        ]
    )
    with h5py.File(out, "r") as handle:
        assert handle["FiberImages"].dtype["im_array"].shape == (4, 9, 100)
        assert sorted(np.unique(handle["Labels"]["vis_class"], return_counts=True)[1]) == [2, 3]


@pytest.mark.parametrize("mix", ["5:3,7:1", "five:3", "5:-1"])
def test_simulate_rejects_a_bad_mix(tmp_path, mix):
    with pytest.raises(SystemExit):
        main(["simulate", "--out", str(tmp_path / "x.h5"), "--class-counts", mix])


def test_train_stops_on_a_malformed_file_naming_it(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(SystemExit, match=r"junk\.h5: not a readable HDF5 file"):
        main(["train", "--data", str(junk), "--out", str(tmp_path / "m"), "--version", "9"])
