"""Shared trainer helpers: seeds, fingerprints, the resume decision, plain-run DDP helpers."""
import numpy as np
import pytest
import torch

from facelm.checkpoint import save_state
from facelm.training.common import (all_reduce_mean, array_fingerprint, broadcast_object,
                                    derive_seed, gather_objects, resume_or_fresh,
                                    setup_distributed, teardown_distributed,
                                    tensor_fingerprint)


def test_derive_seed_is_stable_and_separates_streams():
    assert derive_seed(0, 1) == derive_seed(0, 1)
    seeds = {derive_seed(0, 1), derive_seed(0, 2), derive_seed(1, 1), derive_seed(0, 3, 0),
             derive_seed(0, 3, 1)}
    assert len(seeds) == 5 and all(0 <= s < 2**32 for s in seeds)


def test_fingerprints_see_changes():
    x = np.zeros((5, 4, 4, 3), np.uint8)
    y = x.copy()
    y[2, 0, 0, 0] = 1  # the middle image
    assert array_fingerprint(x) == array_fingerprint(x.copy()) != array_fingerprint(y)
    assert array_fingerprint(x)["shape"] == [5, 4, 4, 3]
    a, b = torch.zeros(3), torch.ones(3)
    assert tensor_fingerprint(a, None) == tensor_fingerprint(a.clone(), None)
    assert tensor_fingerprint(a, None) != tensor_fingerprint(a, b)


def _write(path, chash, step=5, **extra):
    save_state(path, {"config_hash": chash, "config": {"lr": 1.0, "gamma": 0.5}, "step": step,
                      "w": torch.arange(3), **extra})


def test_missing_checkpoint_is_a_fresh_start(tmp_path):
    res = resume_or_fresh(tmp_path / "state.pt", "abc", name="BEGAN")
    assert not res.resumed and res.step is None and res.reason == ""
    assert res.message().startswith("BEGAN: starting fresh (no checkpoint")


def test_matching_checkpoint_resumes_and_says_so(tmp_path):
    _write(tmp_path / "state.pt", "abc", step=7)
    res = resume_or_fresh(tmp_path / "state.pt", "abc", name="BEGAN", limit=10)
    assert res.resumed and res.step == 7 and torch.equal(res.state["w"], torch.arange(3))
    assert res.message().startswith("BEGAN: resumed from step 7")
    res = resume_or_fresh(tmp_path / "state.pt", "abc", name="L-Gen", progress_key="step")
    assert res.message().startswith("L-Gen: resumed from step 7")


def test_other_config_is_moved_aside_with_the_keys_that_differ(tmp_path):
    path = tmp_path / "state.pt"
    _write(path, "abcdef0123456789")
    with pytest.warns(UserWarning, match=r"differs in: gamma\).*moved to"):
        res = resume_or_fresh(path, "other", config={"lr": 1.0, "gamma": 0.7}, name="BEGAN")
    assert not res.resumed and not path.exists()
    assert res.moved_to == tmp_path / "stale-abcdef012345.pt" and res.moved_to.is_file()
    assert "differs in: gamma" in res.message() and "starting fresh" in res.message()


def test_overwrite_and_raise_policies(tmp_path):
    path = tmp_path / "state.pt"
    _write(path, "abc")
    with pytest.warns(UserWarning, match="afresh; it will be overwritten"):
        res = resume_or_fresh(path, "xyz", on_mismatch="overwrite")
    assert not res.resumed and path.is_file()  # left in place, to be overwritten
    with pytest.raises(ValueError, match="other data or settings"):
        resume_or_fresh(path, "xyz", on_mismatch="raise")


def test_past_the_limit_or_other_format_is_not_resumed(tmp_path):
    path = tmp_path / "state.pt"
    _write(path, "abc", step=12)
    with pytest.warns(UserWarning, match="step 12 > 10"):
        assert not resume_or_fresh(path, "abc", limit=10, on_mismatch="overwrite").resumed
    _write(path, "abc", format=1)
    with pytest.warns(UserWarning, match="format"):
        assert not resume_or_fresh(path, "abc", fmt=2, on_mismatch="overwrite").resumed
    assert resume_or_fresh(path, "abc", fmt=1).resumed


def test_unreadable_checkpoint_is_never_replaced(tmp_path):
    path = tmp_path / "state.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="cannot read .*state.pt"):
        resume_or_fresh(path, "abc")
    assert path.read_bytes() == b"not a checkpoint"


def test_plain_run_distributed_helpers(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    d = setup_distributed("cpu")
    assert (d.rank, d.world, d.device.type, d.owns_group, d.is_main) == (0, 1, "cpu", False, True)
    t = torch.tensor([1.0, 2.0])
    assert all_reduce_mean(t, 1) is t
    assert broadcast_object({"a": 1}, 1) == {"a": 1}
    assert gather_objects("x", 1) == ["x"]
    teardown_distributed(d)  # nothing to tear down: no error
