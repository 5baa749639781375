"""ADAPT.md's verdicts follow the numbers: each target flips when its number does."""

import json

from training import adapt_report


def point(strategy: str, labels: int, fom: float, low_snr: float = 0.86, **extra) -> dict:
    summary = {"fom": fom, "balanced_accuracy": low_snr}
    return {
        "strategy": strategy,
        "labels": labels,
        "dr1": {"ensemble": summary, "cnn": summary},
        "low_snr": {"ensemble": summary},
        "stage2": {"share": 0.0, "accuracy": float("nan"), "constant_accuracy": float("nan")},
        "band_cnn_call_accuracy": 0.6,
        "forgetting": {"A": {"fom": 0.9, "family_accuracy": {"line": 0.95}}},
        **extra,
    }


def result(suggest: dict[int, float], random_1000: float) -> dict:
    off = {"used": False, "why": "out of fold ... the SVM must beat both"}
    points = {
        f"suggest-{n}": point("suggest", n, fom, **({"stage2_manifest": off} if n else {}))
        for n, fom in suggest.items()
    }
    points["random-1000"] = point("random", 1000, random_1000, stage2_manifest=off)
    ceiling = point("ceiling", 0, 0.92)
    ceiling["oracle_threshold_fom"] = 0.93
    return {
        "simulator": "C",
        "ceiling": ceiling,
        "points": points,
    }


def verdicts(lines: list[str]) -> list[str]:
    return [line.rsplit("|", 2)[-2].strip() for line in lines[2:]]


def test_each_target_follows_its_number():
    good = result({0: 0.82, 100: 0.85, 250: 0.87, 500: 0.89, 1000: 0.905}, random_1000=0.88)
    assert verdicts(adapt_report.targets(good)) == ["**met**"] * 6
    short = result({0: 0.82, 100: 0.83, 250: 0.84, 500: 0.86, 1000: 0.89}, random_1000=0.87)
    got = verdicts(adapt_report.targets(short))
    assert got[0] == "**not met**"  # 0.04 of a 0.10 gap
    assert got[1] == "**not met**"  # 0.03 below the ceiling
    assert got[4] == "**not met**"  # random's 0.87 first reached at 1000
    worse = result({0: 0.82, 100: 0.80, 250: 0.84, 500: 0.89, 1000: 0.905}, random_1000=0.88)
    assert verdicts(adapt_report.targets(worse))[3] == "**not met**"  # below the parent at 100


def test_the_report_names_the_command_and_draws_the_plot(tmp_path):
    data = result({0: 0.82, 100: 0.85, 250: 0.87, 500: 0.89, 1000: 0.905}, random_1000=0.88)
    (tmp_path / "adapt-C.json").write_text(json.dumps(data))
    path = adapt_report.write(tmp_path)
    text = path.read_text()
    assert f"python -m training experiment adapt --model {tmp_path} --simulator C" in text
    assert (tmp_path / adapt_report.PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| suggest | 500 | 0.8900 | 70% |" in text
