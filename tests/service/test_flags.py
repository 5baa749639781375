import numpy as np

from service.flags import NOVEL, flags_for, masked_fraction


def test_masked_share_over_half_is_flagged():
    cutouts = np.ones((2, 9, 32), dtype=np.float32)
    cutouts[0, :5] = 0.0
    shares = masked_fraction(cutouts)
    assert shares[0] > 0.5 and shares[1] == 0.0
    assert flags_for(shares[0], None) == ["mostly_masked"]
    assert flags_for(shares[1], None) == []


def test_wavelength_flags_follow_the_hetdex_brief():
    assert flags_for(0.0, 4500.0) == []
    assert flags_for(0.0, 5200.0) == ["sky_residual_window"]
    assert flags_for(0.0, 3560.0) == []
    assert flags_for(0.0, 3536.0) == ["sky_residual_window", "outside_trusted_wavelength_range"]
    assert flags_for(0.0, 5530.0) == ["outside_trusted_wavelength_range"]


def test_novel_is_added_beside_the_other_flags():
    assert flags_for(0.0, 4500.0, novel=True) == [NOVEL] == ["novel"]
    assert flags_for(0.0, 4500.0, novel=False) == []
    assert flags_for(0.9, 5530.0, True) == [
        "mostly_masked",
        "outside_trusted_wavelength_range",
        NOVEL,
    ]
