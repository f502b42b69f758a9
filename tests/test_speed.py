"""The cached machine-speed reference (facelm.report.speed)."""
import json
import math

import pytest
import torch

from facelm.report import speed


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "speed.json"
    monkeypatch.setenv(speed.CACHE_ENV, str(path))
    return path


def test_reference_is_measured_once_then_read_from_the_cache(cache, monkeypatch, one_thread):
    first = speed.reference_speed(seconds=0.05)  # one thread: quick on a busy machine
    assert first > 0 and math.isfinite(first)
    entries = json.loads(cache.read_text())
    assert entries[speed.machine_key()]["images_per_s"] == first

    def no_measuring(**_):
        raise AssertionError("measured although cached")

    monkeypatch.setattr(speed, "eager_began_rate", no_measuring)
    assert speed.reference_speed() == first
    monkeypatch.setattr(speed, "eager_began_rate", lambda **_: 123.0)
    assert speed.reference_speed(refresh=True) == 123.0
    assert json.loads(cache.read_text())[speed.machine_key()]["images_per_s"] == 123.0


def test_cache_is_per_thread_setting_and_a_damaged_file_is_measured_again(cache, monkeypatch):
    monkeypatch.setattr(speed, "eager_began_rate", lambda **_: float(torch.get_num_threads()))
    before = torch.get_num_threads()
    assert speed.reference_speed(threads=1) == 1.0
    assert torch.get_num_threads() == before  # restored
    keys = json.loads(cache.read_text())
    assert any("| 1 threads |" in k for k in keys)
    cache.write_text("{not json")
    assert speed.reference_speed(threads=1) == 1.0
    assert json.loads(cache.read_text())  # rewritten whole


def test_cache_path_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv(speed.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert speed.cache_path() == tmp_path / "facelm" / "speed.json"
    monkeypatch.setenv(speed.CACHE_ENV, str(tmp_path / "x.json"))
    assert speed.cache_path() == tmp_path / "x.json"


def test_eager_rate_needs_exactly_one_budget_and_leaves_the_global_rng():
    with pytest.raises(ValueError):
        speed.eager_began_rate()
    with pytest.raises(ValueError):
        speed.eager_began_rate(steps=1, seconds=1.0)
    state = torch.get_rng_state()
    assert speed.eager_began_rate(steps=1, warmup=0) > 0
    assert torch.equal(state, torch.get_rng_state())


def test_machine_record():
    m = speed.machine()
    assert m["cores"] >= 1 and m["threads"] == torch.get_num_threads() and m["cpu"]
    assert m["torch"] == torch.__version__ and m["torch"] in speed.machine_key(m)
