import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from facelm.cli import main
from facelm.config import (AUTHORS_KEEPING, DetectorParams, Params, ParamsError, deep_merge, load_params, parse_params,
                           replace)

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
    ({"began": {"best_after": 1.0}}, "began.best_after", "in [0, 1)"),
    ({"began": {"recon_batch": 17}}, "began.recon_batch", "<= began.batch_size (16)"),
    ({"began": {"recon_batch": 0}}, "began.recon_batch", "> 0"),
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


# ---------------------------------------------------------------- one place, one meaning
def test_code_defaults_are_the_shipped_params_yaml():
    """A key left out means what params.yaml says (issue 15: an empty file used other values)."""
    assert Params() == load_params(ROOT / "params.yaml")
    assert Params().to_dict() == parse_params(base()).to_dict()


def test_paper_profile_spells_out_the_paper():
    paper = parse_params(deep_merge(base(), yaml.safe_load((ROOT / "configs" / "paper-celeba.yaml").read_text())))
    b = paper.began
    assert (paper.dataset, paper.image_size, paper.celeba.face_detector) == ("celeba", 128, "haar")
    assert (b.width, b.z_dim, b.batch_size, b.lr, b.beta1, b.beta2, b.gamma, b.eta) == (64, 64, 16, 1e-4, 0.5, 0.999, 0.5, 2)
    assert (b.lr_decay, b.lambda_k, b.k0, b.recon_weight) == (1.0, 0.001, 0.0, 0.0)
    assert (b.best_by, b.best_from) == ("M", 0)  # the authors' kept G
    assert {k: getattr(b, k) for k in AUTHORS_KEEPING} == AUTHORS_KEEPING
    assert (paper.inversion.steps, paper.inversion.lr, paper.inversion.loss) == (500, 0.1, "l1")
    assert (paper.lgen.epochs, paper.lgen.batch_size, paper.lgen.lr, paper.lgen.hidden) == (1000, 16, 3e-4, [128] * 3)


def test_best_from_is_the_fraction_of_steps_or_the_last_window():
    b = Params().began
    assert (b.steps, b.best_window, b.best_after, b.best_from) == (7000, 500, 0.9, 6300)  # 6500, 7000
    assert replace(b, steps=900).best_from == 500  # 810: no window ends that late, the last counts
    assert replace(b, steps=20_000).best_from == 18_000
    assert replace(b, best_after=0.0).best_from == 0


def test_replace_validates_and_sections_are_frozen():
    params = parse_params(base())
    changed = replace(params.detector, steps=7)
    assert type(changed) is DetectorParams and changed.steps == 7 and params.detector.steps == 3000
    with pytest.raises(ParamsError, match=r"^began\.lr must be > 0"):
        replace(params.began, lr=-1)
    with pytest.raises(ParamsError, match=r"^began\.best_window must be <= began\.steps"):
        replace(params.began, steps=10)
    with pytest.raises(Exception):
        params.began.lr = 1.0  # type: ignore[misc]


def test_new_fields_for_dlib():
    params = parse_params(base())
    assert params.celeba.face_detector == "haar" and params.evaluation.dlib is True
    assert params.evaluation.dlib_size == 128
    assert parse_params(deep_merge(base(), {"celeba": {"landmarks": "dlib", "face_detector": "dlib"}})).celeba.landmarks == "dlib"
    with pytest.raises(ParamsError, match=r"^evaluation\.dlib_size must be in \[64, 512\]"):
        parse_params(deep_merge(base(), {"evaluation": {"dlib_size": 32}}))


# ------------------------------------------------- issue 15, items 2-4: `facelm check`
def check(tmp_path, capsys, content: str | bytes) -> tuple[int, str]:
    """``facelm check --params FILE`` in-process: (exit status, stderr)."""
    path = tmp_path / "p.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    capsys.readouterr()
    status = main(["check", "--params", str(path)])
    err = capsys.readouterr().err
    assert err.count("\n") == (status != 0), err  # one line when refused, nothing when ok
    return status, err


def shipped() -> str:
    return (ROOT / "params.yaml").read_text()


@pytest.mark.parametrize("text, says", [
    ("1: 2\nzzz: 3\n", "p.yaml: 1 is not a known parameter"),          # TypeError on sorting before
    ("zzz: 3\n1: 2\n", "p.yaml: "),
    ("seed: 0\nbegan:\n  1: 2\n  zzz: 3\n", "began.1 is not a known parameter"),
    ("null: 1\nseed: 0\n", "null is not a known parameter"),
])
def test_non_string_keys_refused_by_name(tmp_path, capsys, text, says):
    status, err = check(tmp_path, capsys, text)
    assert status == 2 and says in err


def test_invalid_utf8_refused_with_the_file_name(tmp_path, capsys):
    status, err = check(tmp_path, capsys, shipped().encode().replace(b"seed: 0", b"seed: \xff\xfe0"))
    assert status == 2 and "p.yaml is not UTF-8 text" in err


@pytest.mark.parametrize("key", ["began.lr", "detector.lr", "began.lambda_k", "inversion.tol"])
@pytest.mark.parametrize("value", [".inf", "1.0e+400", ".nan", "-.inf"])
def test_numbers_must_be_finite(tmp_path, capsys, key, value):
    section, name = key.split(".")
    text = yaml.safe_dump(deep_merge(base(), {section: {name: 0.5}})).replace(f"{name}: 0.5", f"{name}: {value}", 1)
    status, err = check(tmp_path, capsys, text)
    assert status == 2 and f"{key} must be a finite number" in err


@pytest.mark.parametrize("text", ["", "# only a comment\n\n   \n# another\n"])
def test_empty_file_refused(tmp_path, capsys, text):
    status, err = check(tmp_path, capsys, text)
    assert status == 2 and "p.yaml holds no parameters" in err


@pytest.mark.parametrize("extra, key", [
    ("seed: 1\n", "seed is given twice"),
    ("began:\n  lr: 1.0e-4\n", "began is given twice"),
])
def test_duplicate_keys_refused(tmp_path, capsys, extra, key):
    status, err = check(tmp_path, capsys, shipped() + extra)
    assert status == 2 and key in err


def test_duplicate_nested_key_refused(tmp_path, capsys):
    status, err = check(tmp_path, capsys, shipped().replace("  lr: 5.0e-4", "  lr: 5.0e-4\n  lr: 1.0e-4", 1))
    assert status == 2 and "lr is given twice (lines" in err


@pytest.mark.parametrize("overlay, says", [
    ({"inversion": {"n_train": -3}}, "inversion.n_train must be > 0 or null (got -3); use null for all"),
    ({"inversion": {"n_train": 0}}, "inversion.n_train must be > 0 or null (got 0); use null for all"),
    ({"celeba": {"limit": -5}}, "celeba.limit must be > 0 or null (got -5); use null for all"),
    ({"celeba": {"limit": 0}}, "use null for all"),
    ({"lgen": {"hidden": []}}, "lgen.hidden must be a non-empty list, each an integer > 0 (got [])"),
    ({"inversion": {"restart_threshold": -1}}, "inversion.restart_threshold must be > 0 or null"),
    ({"began": {"steps": "1e12"}}, "began.steps must be in (0, 10000000] (got 1000000000000); the trainer keeps"),
    ({"began": {"batch_size": 100000}}, "began.batch_size must be <= world.n_train (6000)"),
    ({"seed": 2**40}, "seed must be <= 2147483647"),
    ({"lgen": {"drop_last": True, "batch_size": 7000}}, "lgen.batch_size must be <= the 6000 training pairs"),
])
def test_values_that_fail_later_are_refused_up_front(tmp_path, capsys, overlay, says):
    status, err = check(tmp_path, capsys, yaml.safe_dump(deep_merge(base(), overlay)))
    assert status == 2 and says in err


def test_what_a_person_means_is_accepted(tmp_path, capsys):
    text = (shipped().replace("channels_last: auto", "channels_last: on").replace("bf16: auto", "bf16: OFF")
            .replace("compile: auto", "compile: 'Yes'").replace("lr: 5.0e-4", "lr: 1e-4")
            .replace("steps: 7000", "steps: 7.0e+3"))
    assert check(tmp_path, capsys, text)[0] == 0
    b = load_params(tmp_path / "p.yaml").began
    assert (b.channels_last, b.bf16, b.compile, b.lr, b.steps) == (True, False, True, 1e-4, 7000)
    assert isinstance(b.lr, float) and isinstance(b.steps, int)


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["check", "--no-such-option"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "unrecognized arguments" in err


def test_profile_refuses_an_invalid_or_duplicated_overlay(tmp_path, monkeypatch, capsys):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text(shipped())
    (tmp_path / "dup.yaml").write_text("began:\n  steps: 20\n  steps: 30\n")
    (tmp_path / "big.yaml").write_text("began:\n  batch_size: 7000\n")
    monkeypatch.chdir(tmp_path)
    for name, says in (("dup.yaml", "steps is given twice"), ("big.yaml", "began.batch_size must be <=")):
        assert main(["profile", name]) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1
        assert (tmp_path / "params.yaml").read_text() == shipped()
