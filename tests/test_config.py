import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from facelm.config import Params, ParamsError, deep_merge, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def base() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_params_yaml_loads_and_covers_every_field():
    data = base()
    params = parse_params(data)
    assert isinstance(params, Params)
    # params.yaml spells out every key, so DVC can track each one as a stage dependency
    assert set(params.to_dict()) == set(data)
    for section, values in params.to_dict().items():
        if isinstance(values, dict):
            assert set(values) == set(data[section]), section


@pytest.mark.parametrize("overlay, key, rule", [
    ({"began": {"lr": -1e-4}}, "began.lr", "> 0"),
    ({"began": {"learning_rate": 1}}, "began.learning_rate", "not a known parameter"),
    ({"image_size": 48}, "image_size", "one of [32, 64, 128]"),
    ({"began": {"steps": "many"}}, "began.steps", "an integer"),
    ({"began": {"steps": 1.5}}, "began.steps", "an integer"),
    ({"began": {"gamma": 0}}, "began.gamma", "in (0, 1]"),
    ({"dataset": "ffhq"}, "dataset", "one of 'world', 'celeba'"),
    ({"lgen": {"hidden": [128, "x"]}}, "lgen.hidden[1]", "an integer"),
    ({"inversion": {"loss": "l2"}}, "inversion.loss", "'l1', 'mse'"),
    ({"seedd": 1}, "seedd", "not a known parameter"),
    ({"began": {"best_window": 10**9}}, "began.best_window", "<= began.steps"),
])
def test_bad_values_name_the_key(overlay, key, rule):
    with pytest.raises(ParamsError) as err:
        parse_params(deep_merge(base(), overlay))
    message = str(err.value)
    assert message.startswith(key) and rule in message and "\n" not in message


def test_int_accepted_where_float_expected():
    params = parse_params(deep_merge(base(), {"began": {"lr": 1}}))
    assert params.began.lr == 1.0 and isinstance(params.began.lr, float)


def test_profiles_are_valid_overlays():
    for profile in sorted((ROOT / "configs").glob("*.yaml")):
        parse_params(deep_merge(base(), yaml.safe_load(profile.read_text())))


def test_cli_rejects_bad_param_in_one_line(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(deep_merge(base(), {"began": {"lr": -1}})))
    proc = subprocess.run([sys.executable, "-m", "facelm", "check"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "began.lr must be > 0" in proc.stderr


def test_stage_refuses_bad_params_before_any_work(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(deep_merge(base(), {"world": {"n_train": 0}})))
    proc = subprocess.run([sys.executable, "-m", "facelm", "stage", "01_preprocess"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "world.n_train must be > 0" in proc.stderr
    assert not (tmp_path / "reports").exists() and not (tmp_path / "data").exists()


def test_profile_command_merges_and_validates(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "small.yaml").write_text("began:\n  steps: 20\n  best_window: 10\n")
    subprocess.run([sys.executable, "-m", "facelm", "profile", "small.yaml"], cwd=tmp_path, check=True)
    merged = load_params(tmp_path / "params.yaml")
    assert merged.began.steps == 20 and merged.began.lr == load_params(ROOT / "params.yaml").began.lr
    (tmp_path / "bad.yaml").write_text("began:\n  steps: -1\n")
    before = (tmp_path / "params.yaml").read_text()
    proc = subprocess.run([sys.executable, "-m", "facelm", "profile", "bad.yaml"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and (tmp_path / "params.yaml").read_text() == before
