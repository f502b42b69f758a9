"""The stage cost model and its plans (facelm.report.timing)."""
import math

import pytest

from facelm.config import FRESH_ENCODER, Params, replace
from facelm.report import speed, timing

REF = 1234.0  # a reference speed given explicitly: nothing is measured


def with_section(p: Params, section: str, **changes) -> Params:
    return replace(p, **{section: replace(getattr(p, section), **changes)})


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "speed.json"
    monkeypatch.setenv(speed.CACHE_ENV, str(path))
    return path


def test_doubling_began_steps_doubles_its_time_above_the_overhead():
    p = Params()
    t1 = timing.expected_seconds("02_began", p, REF)
    t2 = timing.expected_seconds("02_began", with_section(p, "began", steps=2 * p.began.steps), REF)
    overhead = timing.expected_seconds("05_results", p, REF)  # a stage of overhead only
    assert math.isclose(t2 - overhead, 2 * (t1 - overhead), rel_tol=1e-9)
    assert 1.95 < t2 / t1 <= 2.0


def test_the_mode_regulariser_costs_its_measured_factor():
    p = Params()
    on = timing.expected_seconds("02_began", with_section(p, "began", recon_weight=0.5), REF)
    off = timing.expected_seconds("02_began", replace(p, began=replace(p.began, recon_weight=0.0),
                                  inversion=replace(p.inversion, **FRESH_ENCODER)), REF)
    overhead = timing.expected_seconds("05_results", p, REF)
    assert math.isclose(on - overhead, timing.RECON_STEP_COST * (off - overhead), rel_tol=1e-9)
    # a sub-batch (began.recon_batch) pays the fixed part and its share of the rest
    half = timing.expected_seconds("02_began", with_section(p, "began", recon_weight=0.5, recon_batch=8), REF)
    share = 1 + timing.RECON_FIXED_COST + (timing.RECON_STEP_COST - 1 - timing.RECON_FIXED_COST) / 2
    assert math.isclose(half - overhead, share * (off - overhead), rel_tol=1e-9)
    assert off < half < on


@pytest.mark.parametrize("stage, section, field", [
    ("00_detector", "detector", "steps"), ("00_detector", "detector", "n_train"),
    ("00_detector", "detector", "width"), ("01_preprocess", "world", "n_train"),
    ("02_began", "began", "batch_size"), ("02_began", "began", "width"),
    ("03_inversion", "inversion", "steps"), ("03_inversion", "world", "n_heldout"),
    ("04_lgen", "lgen", "epochs"), ("04_lgen", "world", "n_train"),
    ("06_evaluation", "evaluation", "n_random"), ("07_augmentation", "augmentation", "steps"),
    ("07_augmentation", "augmentation", "seeds"),
])
def test_each_stage_grows_with_its_sizes(stage, section, field):
    p = Params()
    bigger = with_section(p, section, **{field: 2 * getattr(getattr(p, section), field)})
    assert timing.expected_seconds(stage, bigger, REF) > timing.expected_seconds(stage, p, REF)


def test_larger_images_cost_more_and_a_faster_machine_takes_less_time():
    p = Params()
    big = replace(p, image_size=64)
    assert timing.expected_units("02_began", big) > timing.expected_units("02_began", p)
    assert timing.expected_seconds("02_began", p, 2 * REF) == pytest.approx(
        timing.expected_seconds("02_began", p, REF) / 2)


def test_unknown_stage_and_unknown_sizes_give_none():
    p = Params()
    assert timing.expected_seconds("99_nothing", p, REF) is None
    assert timing.expected_units("99_nothing", p) is None
    celeba = replace(p, dataset="celeba")  # the crop count is known only once it runs
    assert timing.expected_seconds("01_preprocess", celeba, REF) is None
    assert timing.expected_seconds("02_began", celeba, REF) is not None  # not size-dependent
    assert "unknown" in timing.format_plan("99_nothing", p, REF)


def test_defaults_reproduce_the_calibration_at_the_calibration_reference():
    p = timing.calibration_params()  # that run's settings
    ref = timing.CALIBRATION_REFERENCE
    for stage in ("01_preprocess", "02_began", "03_inversion", "04_lgen", "05_results",
                  "06_evaluation", "07_augmentation"):
        assert timing.expected_seconds(stage, p, ref) == pytest.approx(
            timing.CALIBRATION_SECONDS[stage], rel=1e-9), stage
    # 00_detector is not fitted: its terms come from 01 (render) and 07 (detector)
    assert timing.expected_seconds("00_detector", p, ref) == pytest.approx(
        timing.CALIBRATION_SECONDS["00_detector"], rel=0.25)


def test_format_plan_and_actual():
    line = timing.format_plan("02_began", Params(), REF)
    units = timing.expected_units("02_began", Params())
    assert line.startswith("expected ≈ ") and "on this machine" in line
    assert f"{units:.3g} reference units; reference 1234 img/s" in line
    assert timing.format_duration(42) == "42 s"
    assert timing.format_duration(438) == "7.3 min"
    assert timing.format_duration(3 * 3600) == "3.0 h"
    assert timing.format_actual(400, 438) == "took 6.7 min (expected ≈ 7.3 min: 0.91x)"
    assert timing.format_actual(12, None) == "took 12 s"


def test_plan_stage_never_raises_and_note_goes_to_the_top_of_the_report(cache, monkeypatch,
                                                                          tmp_path):
    import nbformat

    monkeypatch.setattr(speed, "eager_began_rate", lambda **_: REF)
    line, expected = timing.plan_stage("02_began", Params())
    assert line == timing.format_plan("02_began", Params(), REF)
    assert expected == timing.expected_seconds("02_began", Params(), REF)

    def broken(**_):
        raise RuntimeError("no clock")

    monkeypatch.setattr(speed, "eager_began_rate", broken)
    monkeypatch.setenv(speed.CACHE_ENV, str(tmp_path / "other.json"))
    line, expected = timing.plan_stage("02_began", Params())
    assert expected is None and "unknown (RuntimeError: no clock)" in line

    path = tmp_path / "nb.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    nbformat.write(nb, path)
    timing.note_in_report(path, ["expected ≈ 7.3 min", "took 6.9 min"])
    cells = nbformat.read(path, as_version=4).cells
    assert len(cells) == 2 and cells[1].source == "x = 1"
    assert cells[0].cell_type == "markdown"
    assert "expected ≈ 7.3 min" in cells[0].source and "took 6.9 min" in cells[0].source
