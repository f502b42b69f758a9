"""BEGAN loss and trainer: math, files, callbacks, exact resume after SIGKILL, stale
checkpoints, and DDP replicas under torchrun (2 gloo processes on CPU)."""
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from facelm.checkpoint import load_state, load_weights, state_digest
from facelm.config import AUTHORS_KEEPING, BEGANParams, replace
from facelm.models.began import (CodeEncoder, Discriminator, Encoder, Generator, load_code_encoder,
                                 load_generator)
from facelm.training.began import _auto, m_final, train_began
from facelm.training.common import derive_seed, match_layout
from facelm.training.loss import BEGANLoss

torch.set_num_threads(1)  # determinism between the in-process runs and the subprocesses
ROOT = Path(__file__).resolve().parents[1]
# a tiny run: "never" checkpoint/sample is a period beyond the run (the end still saves);
# G kept by M over the whole run (the authors), so no test needs dlib unless it asks
TINY = replace(BEGANParams(), width=4, z_dim=8, batch_size=4, best_window=2, **AUTHORS_KEEPING,
               sample_every=10_000, checkpoint_every=10_000)


def tiny(**changes) -> BEGANParams:
    return replace(TINY, **changes)


def loss_fn(**changes) -> BEGANLoss:
    return BEGANLoss(replace(BEGANParams(), **changes))


@pytest.fixture(scope="module")
def images():
    """A few dozen uniform-colour 32 px images (easy for the auto-encoder)."""
    cols = np.random.default_rng(0).integers(0, 256, (24, 1, 1, 3), dtype=np.uint8)
    return np.broadcast_to(cols, (24, 32, 32, 3)).copy()


# ----------------------------------------------------------------------------- loss math
def test_recon_loss_eta():
    v = torch.tensor([[0.0, 1.0], [-1.0, 0.5]])
    rec = torch.tensor([[0.5, 1.0], [0.0, 0.0]])
    assert loss_fn(eta=1).recon(v, rec).item() == pytest.approx((0.5 + 0 + 1 + 0.5) / 4)
    assert loss_fn(eta=2).recon(v, rec).item() == pytest.approx((0.25 + 0 + 1 + 0.25) / 4)


def test_k_update_and_clip():
    f = loss_fn(gamma=0.5, lambda_k=0.1)
    t = torch.tensor
    assert f.update_k(t(0.5), t(0.2), t(0.05)).item() == pytest.approx(0.5 + 0.1 * (0.1 - 0.05))
    assert f.update_k(t(0.0), t(0.2), t(0.9)).item() == 0.0  # clipped below
    assert loss_fn(gamma=0.5, lambda_k=10.0).update_k(t(0.99), t(0.4), t(0.0)).item() == 1.0  # clipped above


def test_convergence_measure():
    f = loss_fn(gamma=0.5)
    assert f.convergence(torch.tensor(0.2), torch.tensor(0.3)).item() == pytest.approx(0.4)
    assert f.convergence(torch.tensor(0.2), torch.tensor(0.05)).item() == pytest.approx(0.25)


def test_d_and_g_loss_with_fixed_discriminators():
    f = loss_fn(gamma=0.5, k0=0.2)
    x, fake = torch.full((2, 3, 4, 4), 0.5), torch.full((2, 3, 4, 4), -0.25)
    loss_D, L_real, L_fake = f.d_loss(lambda v: torch.zeros_like(v), x, fake)
    assert (L_real.item(), L_fake.item()) == pytest.approx((0.5, 0.25))
    assert loss_D.item() == pytest.approx(0.5 - 0.2 * 0.25)
    assert f.g_loss(lambda v: v, fake).item() == 0.0  # a perfect auto-encoder


def test_loss_holds_k_and_update_advances_it():
    f = loss_fn(gamma=0.5, lambda_k=0.1, k0=0.25)
    assert f.k.item() == 0.25
    M = f.update(torch.tensor(0.2), torch.tensor(0.05))
    assert f.k.item() == pytest.approx(0.25 + 0.1 * (0.1 - 0.05))
    assert M.item() == pytest.approx(0.2 + 0.05)


@pytest.mark.parametrize("k", [0.0, 0.3])
def test_joint_step_gradients_equal_two_backward_passes(k):
    torch.manual_seed(0)
    G, D = Generator(32, 4, 8, seed=1), Discriminator(32, 4, 8, seed=2)
    x, z, kt = torch.rand(3, 3, 32, 32) * 2 - 1, torch.rand(3, 8) * 2 - 1, torch.tensor(k)
    f = loss_fn(k0=k)
    objective, L_real, L_fake, L_recon = f(G, D, x, z)
    assert L_recon is None  # recon_weight 0: no encoder term
    objective.backward()
    # reference: the authors' two gradients from the same forward, computed separately
    fake = G(z)
    ref_D = torch.autograd.grad(f.recon(x, D(x)) - kt * f.recon(fake.detach(), D(fake.detach())),
                                list(D.parameters()))
    ref_G = torch.autograd.grad(f.recon(fake, D(fake)), list(G.parameters()))
    for p, r in zip([*D.parameters(), *G.parameters()], [*ref_D, *ref_G]):
        torch.testing.assert_close(p.grad, r, rtol=1e-5, atol=1e-7)
    assert L_fake.item() == pytest.approx(f.recon(fake, D(fake)).item())


def test_recon_term_adds_its_gradient_to_g_and_trains_the_encoder():
    """began.recon_weight w: G's gradient is BEGAN's plus w * d mean|x - G(tanh(E(x)))|, E gets
    only the latter, D none of it; G draws fake and reconstruction in one pass."""
    torch.manual_seed(0)
    G, D, E = Generator(32, 4, 8, seed=1), Discriminator(32, 4, 8, seed=2), Encoder(32, 4, 8)
    x, z, w = torch.rand(3, 3, 32, 32) * 2 - 1, torch.rand(3, 8) * 2 - 1, 2.5
    f = loss_fn(k0=0.3, recon_weight=w)
    objective, L_real, L_fake, L_recon = f(G, D, x, z, torch.tanh(E(x)))
    objective.backward()
    rec = (x - G(torch.tanh(E(x)))).abs().mean()
    assert L_recon.item() == pytest.approx(w * rec.item(), rel=1e-5)
    ref_G = torch.autograd.grad(f.recon(G(z), D(G(z))) + w * rec, list(G.parameters()),
                                retain_graph=True)
    ref_E = torch.autograd.grad(w * rec, list(E.parameters()))
    for p, r in zip([*G.parameters(), *E.parameters()], [*ref_G, *ref_E]):
        torch.testing.assert_close(p.grad, r, rtol=1e-4, atol=1e-7)
    pooled = loss_fn(recon_weight=w, recon_pool=2).draw(G, z, x, torch.tanh(E(x)))[1]
    coarse = torch.nn.functional.avg_pool2d(x - G(torch.tanh(E(x))), 2).abs().mean()
    assert pooled.item() == pytest.approx(w * coarse.item(), rel=1e-5) and coarse < rec
    D2 = Discriminator(32, 4, 8, seed=2)  # D's gradient is the plain BEGAN one
    f0 = loss_fn(k0=0.3)
    f0(G, D2, x, z)[0].backward()
    for p, q in zip(D.parameters(), D2.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7)


def test_recon_batch_compares_only_the_encoded_faces():
    """began.recon_batch n: E codes the batch's first n faces and only those are compared with
    G's redrawing; the random half of G's pass is unchanged."""
    torch.manual_seed(0)
    G, E = Generator(32, 4, 8, seed=1), Encoder(32, 4, 8)
    x, z, w = torch.rand(4, 3, 32, 32) * 2 - 1, torch.rand(4, 8) * 2 - 1, 0.5
    f = loss_fn(recon_weight=w)
    fake, L = f.draw(G, z, x, torch.tanh(E(x[:2])))
    assert fake.shape == (4, 3, 32, 32)
    torch.testing.assert_close(fake, G(z), rtol=1e-5, atol=1e-6)
    part = (x[:2] - G(torch.tanh(E(x[:2])))).abs().mean()
    assert L.item() == pytest.approx(w * part.item(), rel=1e-5)
    assert L.item() != pytest.approx(w * (x - G(torch.tanh(E(x)))).abs().mean().item(), rel=1e-3)


# ----------------------------------------------------------------------------- trainer
def test_m_final_is_the_mean_over_the_last_percent():
    M = np.arange(250, dtype=np.float32)
    assert m_final(M) == pytest.approx((248 + 249) / 2)  # 1 % of 250 = 2 steps
    assert m_final(M[:50]) == 49.0  # fewer than 100 steps: the last one
    assert np.isnan(m_final(np.array([], np.float32)))


@pytest.mark.parametrize("update", ["joint", "alternate"])
def test_short_run_learns_and_writes_files(images, tmp_path, update):
    cfg = tiny(steps=16, lr=1e-3, best_window=8, update=update)
    r = train_began(images, cfg, tmp_path, seed=0, progress=False)
    assert r.steps == 16 and r.M.shape == r.k.shape == (16,)
    assert r.L_real[-4:].mean() < r.L_real[:4].mean()  # the auto-encoder learns colours
    for name in ("generator.safetensors", "generator_last.safetensors",
                 "discriminator.safetensors", "checkpoint/state.pt"):
        assert (tmp_path / name).is_file(), name
    # the history obeys the BEGAN recurrences
    k_prev = np.concatenate([[cfg.k0], r.k[:-1]])
    np.testing.assert_allclose(
        r.k, np.clip(k_prev + cfg.lambda_k * (cfg.gamma * r.L_real - r.L_fake), 0, 1), atol=1e-6)
    np.testing.assert_allclose(r.M, r.L_real + np.abs(cfg.gamma * r.L_real - r.L_fake), rtol=1e-5)
    # "best" = lowest mean M over windows of 8 steps; generator.safetensors is that G
    windows = r.M.reshape(2, 8).mean(1)
    assert r.best_step == 8 * (int(np.argmin(windows)) + 1)
    assert r.best_M == pytest.approx(windows.min(), rel=1e-5)
    _, meta = load_weights(tmp_path / "generator.safetensors")
    assert meta["step"] == r.best_step and meta["role"] == "best"
    assert r.M_final == m_final(r.M) == pytest.approx(float(r.M[-1]))
    assert r.resumed_from is None and "starting fresh" in r.resume_message


class StepScorer:
    """A scorer that rates each call by a fixed table (the window order), recording the G's
    weights it saw, so a test can tell which window the trainer kept."""

    def __init__(self, scores):
        self.scores, self.seen = list(scores), []

    def __call__(self, G):
        self.seen.append({k: v.clone() for k, v in G.state_dict().items()})
        return self.scores[len(self.seen) - 1]


def test_best_by_score_keeps_the_highest_scoring_window_from_best_from(images, tmp_path):
    cfg = tiny(steps=8, best_window=2, best_by="dlib", best_after=0.5, best_dlib_n=4)
    scorer = StepScorer([0.2, 0.9, 0.5])  # windows ending at 4, 6, 8 (2 is before best_from)
    events = []
    r = train_began(images, cfg, tmp_path, seed=0, progress=False, scorer=scorer,
                    callbacks=[lambda e, s: events.append((e, s))])
    assert len(scorer.seen) == 3 and r.best_step == 6
    assert r.best_M == pytest.approx(float(r.M[4:6].mean()), rel=1e-5)
    kept, meta = load_weights(tmp_path / "generator.safetensors")
    assert meta["step"] == 6 and all(torch.equal(kept[k], scorer.seen[1][k]) for k in kept)
    assert [(s["step"], s["score"]) for e, s in events if e == "best"] == [(4, 0.2), (6, 0.9)]
    assert load_state(tmp_path / "checkpoint" / "state.pt")["best_score"] == pytest.approx(-0.9)
    # by M, best_after alone keeps no window that ends before it (0.75 of 8 steps: 6)
    by_m = train_began(images, tiny(steps=8, best_window=2, best_after=0.75), tmp_path / "m",
                       seed=0, progress=False)
    windows = by_m.M.reshape(4, 2).mean(1)
    assert by_m.best_step == 2 * (2 + int(np.argmin(windows[2:])) + 1)
    with pytest.raises(ValueError, match="needs a scorer"):
        train_began(images, cfg, tmp_path / "none", seed=0, progress=False)
    assert not (tmp_path / "none").exists()


def test_best_by_is_part_of_the_run_configuration(images, tmp_path):
    """A run keeping by dlib does not resume a checkpoint kept by M; M from step 0 adds no key."""
    from facelm.training.began_run import _run_config

    assert not {"best_by", "best_after", "best_dlib_n"} & set(_run_config(tiny(), 32, 0, 1, images))
    train_began(images, tiny(steps=4), tmp_path, seed=0, progress=False)
    with pytest.warns(UserWarning, match=r"differs in: best_by, best_dlib_n"):
        r = train_began(images, tiny(steps=4, best_by="dlib"), tmp_path, seed=0, progress=False,
                        scorer=lambda G: 0.5)
    assert r.resumed_from is None


def test_a_longer_run_resumes_and_keeps_only_windows_from_its_own_best_from(images, tmp_path):
    """best_after is a fraction: 8 steps resume a 4-step run of the same settings, and the
    window kept there (step 2 < 0.5 * 8) gives way to the later windows."""
    cfg = tiny(steps=4, best_window=2, best_by="dlib", best_after=0.5, best_dlib_n=4,
               checkpoint_every=2)
    first = train_began(images, cfg, tmp_path, seed=0, progress=False, scorer=StepScorer([0.9, 0.1]))
    assert first.best_step == 2  # best_from 2: windows 2 and 4
    scorer = StepScorer([0.3, 0.5])
    longer = train_began(images, replace(cfg, steps=8), tmp_path, seed=0, progress=False,
                         scorer=scorer)
    assert longer.resumed_from == 4 and len(scorer.seen) == 2 and longer.best_step == 8
    kept, meta = load_weights(tmp_path / "generator.safetensors")
    assert meta["step"] == 8 and all(torch.equal(kept[k], scorer.seen[1][k]) for k in kept)


def test_callbacks_samples_and_lr_decay(images, tmp_path):
    events = []
    cfg = tiny(steps=6, best_window=3, checkpoint_every=4, lr=1e-3, lr_decay=0.5,
               lr_decay_every=2, sample_every=3)
    r = train_began(images, cfg, tmp_path, seed=0, progress=False, n_sample=5,
                    callbacks=[lambda e, s: events.append((e, s))])
    names = [e for e, _ in events]
    assert names[0] == "start" and names[-1] == "end"
    steps = [s for e, s in events if e == "step"]
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5, 6]
    assert set(steps[0]) == {"step", "loss_D", "loss_G", "L_real", "L_fake", "k", "M", "lr"}
    assert all(isinstance(v, float) for k, v in steps[0].items() if k != "step")
    assert [s["lr"] for s in steps] == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4])
    assert r.lr == pytest.approx([s["lr"] for s in steps])
    assert list(r.loss_D) == [s["loss_D"] for s in steps]  # float32 round trip: exact
    assert list(r.loss_G) == [s["loss_G"] for s in steps]
    samples = [s for e, s in events if e == "sample"]
    assert [s["step"] for s in samples] == [3, 6]
    assert samples[0]["images"].dtype == np.uint8 and samples[0]["images"].shape == (5, 32, 32, 3)
    assert [s["step"] for e, s in events if e == "checkpoint"] == [4, 6]
    assert events[-1][1]["result"] is r


def test_image_validation_before_any_work(images, tmp_path):
    cfg = tiny(steps=2)
    for bad, match in [(images.astype(np.float32), "uint8"), (images[:, :24, :24], "uint8"),
                       (images[:3], "batch_size"), (list(images), "numpy array")]:
        with pytest.raises(ValueError, match=match):
            train_began(bad, cfg, tmp_path, seed=0, progress=False)
    with pytest.raises(ValueError, match="sync_every"):
        train_began(images, cfg, tmp_path, seed=0, progress=False, sync_every=0)
    assert not (tmp_path / "checkpoint").exists()  # nothing done before validation


def test_recon_batch_is_part_of_the_run_configuration(images, tmp_path):
    """A sub-batch regulariser trains a different G, and a checkpoint of the full-batch run is
    not resumed by it; with the regulariser off the field changes nothing."""
    on = tiny(steps=4, recon_weight=0.5)
    full = train_began(images, on, tmp_path / "a", seed=0, progress=False)
    with pytest.warns(UserWarning, match=r"differs in: recon_batch"):
        part = train_began(images, replace(on, recon_batch=2), tmp_path / "a", seed=0, progress=False)
    assert part.resumed_from is None and part.weights_digest != full.weights_digest
    off = tiny(steps=4, recon_weight=0.0)
    plain = train_began(images, off, tmp_path / "b", seed=0, progress=False)
    again = train_began(images, replace(off, recon_batch=2), tmp_path / "c", seed=0, progress=False)
    assert again.weights_digest == plain.weights_digest

def test_auto_flags():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert (_auto("auto", cpu, "bf16"), _auto("auto", cuda, "bf16")) == (False, True)
    assert (_auto("on", cpu, "bf16"), _auto("off", cuda, "bf16"), _auto(True, cpu, "x")) == (True, False, True)
    with pytest.raises(ValueError, match="bf16"):
        _auto("yes", cpu, "bf16")


def test_changed_config_does_not_resume(images, tmp_path, capsys):
    base = tiny(steps=4)
    first = train_began(images, base, tmp_path, seed=0, progress=False)
    with pytest.warns(UserWarning, match=r"different configuration \(differs in: gamma\)"):
        fresh = train_began(images, replace(base, gamma=base.gamma / 2), tmp_path, seed=0, progress=False)
    assert fresh.resumed_from is None
    assert list((tmp_path / "checkpoint").glob("stale-*.pt"))
    steps_seen = []
    capsys.readouterr()
    again = train_began(images, replace(base, gamma=base.gamma / 2), tmp_path, seed=0, progress=False,
                        callbacks=[lambda e, s: steps_seen.append(e)])
    assert again.resumed_from == 4 and "resume" in steps_seen and "step" not in steps_seen
    assert again.weights_digest == fresh.weights_digest != first.weights_digest
    # the console (and the notebook's output) says so
    assert "BEGAN: resumed from step 4" in capsys.readouterr().out
    assert again.resume_message.startswith("BEGAN: resumed from step 4")
    # other data or another seed: no resume either
    with pytest.warns(UserWarning, match="data"):
        other = train_began(255 - images, replace(base, gamma=base.gamma / 2), tmp_path, seed=0,
                            progress=False)
    assert other.resumed_from is None
    with pytest.warns(UserWarning, match="seed"):
        train_began(255 - images, replace(base, gamma=base.gamma / 2), tmp_path, seed=1, progress=False)


def test_loaded_adam_moments_take_the_parameter_layout():
    # a CPU (NCHW) checkpoint resumed with channels_last: fused CUDA Adam pairs elements
    # by memory position, so the moments must get the parameters' strides
    G = Generator(32, 4, 8)
    opt = torch.optim.Adam(G.parameters())
    G(torch.ones(2, 8)).square().mean().backward()
    opt.step()
    G2 = Generator(32, 4, 8).to(memory_format=torch.channels_last)
    opt2 = torch.optim.Adam(G2.parameters())
    opt2.load_state_dict(opt.state_dict())
    match_layout(opt2)
    for p, q in zip(G.parameters(), G2.parameters()):
        for key in ("exp_avg", "exp_avg_sq"):
            assert opt2.state[q][key].stride() == q.stride()
            assert torch.equal(opt2.state[q][key], opt.state[p][key])


_KILLED_RUN = """
import sys, time, numpy as np, torch
torch.set_num_threads(1)
from facelm.config import AUTHORS_KEEPING, BEGANParams, replace
from facelm.training.began import train_began
images = np.load(sys.argv[1])
slow = lambda event, state: time.sleep(0.2) if event == "step" else None  # time to be killed
cfg = replace(BEGANParams(), steps=int(sys.argv[3]), checkpoint_every=4, best_window=4,
              width=4, z_dim=8, batch_size=4, sample_every=10_000, **AUTHORS_KEEPING)
train_began(images, cfg, sys.argv[2], seed=0, progress=False, callbacks=[slow])
"""


def test_resume_after_sigkill_is_exact(images, tmp_path):
    steps, cfg = 12, tiny(steps=12, best_window=4)
    ref = train_began(images, cfg, tmp_path / "ref", seed=0, progress=False)

    np.save(tmp_path / "images.npy", images)
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(_KILLED_RUN))
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "images.npy"),
                             str(out), str(steps)], env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint" / "state.pt").exists():
            assert proc.poll() is None, "training subprocess died before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_state(out / "checkpoint" / "state.pt")["step"]
    assert 0 < killed_at < steps

    resumed = train_began(images, replace(cfg, checkpoint_every=4), out, seed=0, progress=False)
    assert resumed.resumed_from == killed_at
    for name in ("generator_last", "discriminator", "generator"):
        a, _ = load_weights(tmp_path / "ref" / f"{name}.safetensors")
        b, _ = load_weights(out / f"{name}.safetensors")
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    np.testing.assert_array_equal(resumed.M, ref.M)
    np.testing.assert_array_equal(resumed.k, ref.k)
    assert resumed.best_step == ref.best_step


# ----------------------------------------------------------------------------- CLI
def _parser():
    import argparse

    from facelm.training.began_cli import add_parser

    parser = argparse.ArgumentParser(prog="facelm")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_reads_the_params_file_and_flags_override_it(tmp_path):
    from facelm.training.began_cli import cli_settings

    params = tmp_path / "params.yaml"
    params.write_text("seed: 3\nthreads: 1\nbegan:\n  steps: 900\n  gamma: 0.6\n  width: 8\n")
    args = _parser().parse_args(["train-began", "--params", str(params), "--images", "x.npy",
                                 "--out", "o", "--steps", "5", "--best-window", "5", "--lambda-k", "0.02",
                                 "--update", "alternate", "--compile", "off"])
    cfg, seed, threads = cli_settings(args)
    assert (cfg.steps, cfg.lambda_k, cfg.update, cfg.compile) == (5, 0.02, "alternate", False)
    assert (cfg.gamma, cfg.width, seed, threads) == (0.6, 8, 3, 1)  # from the file
    assert cfg.lr == BEGANParams().lr  # neither: config.py's default
    args = _parser().parse_args(["train-began", "--params", str(params), "--images", "x.npy",
                                 "--out", "o", "--seed", "7", "--threads", "0"])
    assert cli_settings(args)[1:] == (7, 0)


def test_cli_flags_of_optional_keys_take_values_and_null(tmp_path):
    """--d-width, --h-dim and --ema (default null) parse like params.yaml values; the config
    still checks them."""
    from facelm.params_file import ParamsError
    from facelm.training.began_cli import cli_settings

    params = tmp_path / "params.yaml"
    params.write_text("began:\n  d_width: 8\n")
    base = ["train-began", "--params", str(params), "--images", "x.npy", "--out", "o"]
    cfg, _, _ = cli_settings(_parser().parse_args(base + ["--h-dim", "12", "--ema", "1e-3"]))
    assert (cfg.d_width, cfg.h_dim, cfg.ema) == (8, 12, 0.001)
    cfg, _, _ = cli_settings(_parser().parse_args(base + ["--d-width", "null"]))
    assert cfg.d_width is None
    with pytest.raises(ParamsError, match="began.ema"):
        cli_settings(_parser().parse_args(base + ["--ema", "1.5"]))


def test_cli_rejects_a_missing_file(tmp_path):
    args = _parser().parse_args(["train-began", "--images", str(tmp_path / "none.npy"),
                                 "--out", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="--images"):
        args.func(args)


def test_ddp_two_cpu_processes_keep_identical_replicas(images, tmp_path):
    np.save(tmp_path / "images.npy", images)
    out = tmp_path / "ddp"
    params = tmp_path / "params.yaml"
    params.write_text("seed: 0\nbegan:\n  width: 4\n  z_dim: 8\n  batch_size: 4\n"
                      "  steps: 3\n  best_window: 3\n  lr: 1.0e-3\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "facelm", "train-began", "--params", str(params), "--images", str(tmp_path / "images.npy"),
           "--out", str(out), "--device", "cpu", "--no-progress"]
    p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    reports = [json.loads(m) for m in re.findall(r'\{"rank".*?\}', p.stdout)]
    assert sorted(r["rank"] for r in reports) == [0, 1]
    assert all(r["world_size"] == 2 and r["steps"] == 3 for r in reports)
    assert reports[0]["weights_digest"] == reports[1]["weights_digest"]  # replicas agree
    assert p.stdout.count("BEGAN: starting fresh") == 1  # rank 0 reports the decision
    # the files rank 0 wrote are those replicas, and training moved them off the init
    g, _ = load_weights(out / "generator_last.safetensors")
    d, _ = load_weights(out / "discriminator.safetensors")
    assert state_digest(g, d) == reports[0]["weights_digest"]
    init = load_state(out / "checkpoint" / "state.pt")
    assert init["step"] == 3 and len(init["rng"]) == 2  # one RNG state per rank
    assert not torch.equal(init["rng"][0]["sampler"]["perm"], init["rng"][1]["sampler"]["perm"])
    G0 = load_generator(out / "generator_last.safetensors")
    assert not torch.equal(G0.fc.weight, Generator(32, 4, 8, seed=derive_seed(0, 1)).fc.weight)


def test_a_wider_discriminator_trains_and_is_saved_at_its_width(images, tmp_path):
    """began.d_width: D may be wider than G; the files record each width, and a checkpoint of
    another D width is not resumed."""
    from facelm.models.began import load_discriminator, load_generator

    train_began(images, tiny(steps=3, d_width=8), tmp_path, seed=0, progress=False)
    assert load_generator(tmp_path / "generator.safetensors").width == 4
    assert load_discriminator(tmp_path / "discriminator.safetensors").width == 8
    with pytest.warns(UserWarning, match="differs in: d_width"):
        r = train_began(images, tiny(steps=3), tmp_path, seed=0, progress=False)
    assert r.resumed_from is None  # D width 4 now: the width-8 checkpoint is set aside
    assert load_discriminator(tmp_path / "discriminator.safetensors").width == 4


def test_a_wider_bottleneck_trains_and_is_saved_at_its_size(images, tmp_path):
    """began.h_dim: D's bottleneck N_h may differ from G's N_z; D's file records it, G keeps
    z_dim, and a checkpoint of another N_h is not resumed."""
    from facelm.models.began import load_discriminator, load_generator

    train_began(images, tiny(steps=3, h_dim=12), tmp_path, seed=0, progress=False)
    D = load_discriminator(tmp_path / "discriminator.safetensors")
    assert D.z_dim == 12 and D.encoder.fc.out_features == 12
    assert load_generator(tmp_path / "generator.safetensors").z_dim == 8
    with pytest.warns(UserWarning, match="differs in: h_dim"):
        r = train_began(images, tiny(steps=3), tmp_path, seed=0, progress=False)
    assert r.resumed_from is None
    assert load_discriminator(tmp_path / "discriminator.safetensors").z_dim == 8


def _weights(path) -> dict[str, torch.Tensor]:
    return load_weights(path)[0]


def test_ema_is_passive_and_is_the_kept_generator(images, tmp_path):
    """began.ema: the average does not change training (the last G equals a run without it)
    and is what generator.safetensors holds: near the last G for a tiny decay, near G's
    initial weights for a decay close to 1; the average resumes exactly from a checkpoint."""
    cfg = tiny(steps=6, best_window=6, lr=1e-2)
    plain, fast, slow, resumed = (tmp_path / n for n in ("plain", "fast", "slow", "resumed"))
    train_began(images, cfg, plain, seed=0, progress=False)
    train_began(images, replace(cfg, ema=1e-9), fast, seed=0, progress=False)
    train_began(images, replace(cfg, ema=1 - 1e-9), slow, seed=0, progress=False)
    last = _weights(plain / "generator_last.safetensors")
    init = Generator(32, 4, 8, seed=derive_seed(0, 1), skip=cfg.skip).state_dict()
    for run in (fast, slow):  # the trained G is the same with and without an average
        for k, v in _weights(run / "generator_last.safetensors").items():
            torch.testing.assert_close(v, last[k], rtol=0, atol=0)
    moved = max(float((last[k] - init[k]).abs().max()) for k in last)
    assert moved > 1e-3  # training did move G, so the next two checks can tell them apart
    for k, v in _weights(fast / "generator.safetensors").items():
        torch.testing.assert_close(v, last[k], rtol=0, atol=1e-6)
    for k, v in _weights(slow / "generator.safetensors").items():
        torch.testing.assert_close(v, init[k], rtol=0, atol=1e-6)
    # 3 steps, a checkpoint, 3 more: the same average as 6 straight (decay 0.5 mixes every step)
    half = replace(cfg, ema=0.5, best_window=3)
    train_began(images, replace(half, steps=3), resumed, seed=0, progress=False)
    r = train_began(images, half, resumed, seed=0, progress=False)
    assert r.resumed_from == 3
    straight = tmp_path / "straight"
    train_began(images, half, straight, seed=0, progress=False)
    a, b = _weights(resumed / "generator.safetensors"), _weights(straight / "generator.safetensors")
    assert not all(torch.equal(a[k], last[k]) for k in a)  # the average is not the last G
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


@pytest.mark.parametrize("update", ["joint", "alternate"])
def test_recon_weight_trains_an_encoder_that_g_follows_and_resumes_exactly(images, tmp_path, update):
    """With began.recon_weight, G learns to draw the batch from tanh(E(x)) (the reconstruction
    error falls, far below the same G's without the term), and a run cut at a checkpoint
    resumes to the same weights as one straight run (E and its Adam state are checkpointed).
    (40 steps of a 4-wide G learn slowly: about 0.75x the error without the term.)"""
    cfg = tiny(steps=40, best_window=4, lr=2e-3, update=update, recon_weight=0.0)
    on = replace(cfg, recon_weight=1.0)
    train_began(images, cfg, tmp_path / "off", seed=0, progress=False)
    train_began(images, on, tmp_path / "on", seed=0, progress=False)
    st = load_state(tmp_path / "on" / "checkpoint" / "state.pt")
    assert "E" in st and "opt_E" in st and "E" not in load_state(tmp_path / "off" / "checkpoint" / "state.pt")
    E = Encoder(32, 4, 8)
    E.load_state_dict(st["E"])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    errs = {}
    for run in ("on", "off"):
        G = load_generator(tmp_path / run / "generator_last.safetensors", device="cpu")
        with torch.no_grad():
            errs[run] = float((x - G(torch.tanh(E(x)))).abs().mean())
    spread = float((x - x.mean(0)).abs().mean())  # what drawing the mean colour would cost
    assert errs["on"] < 0.85 * min(errs["off"], spread), (errs, spread)
    train_began(images, replace(on, steps=20), tmp_path / "cut", seed=0, progress=False)
    r = train_began(images, on, tmp_path / "cut", seed=0, progress=False)
    assert r.resumed_from == 20
    a, b = _weights(tmp_path / "on" / "generator_last.safetensors"), _weights(tmp_path / "cut" / "generator_last.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    # encoder.safetensors: the E paired with the kept G (E_best), rebuilt as a CodeEncoder,
    # identical after the resume; a run without the term writes none
    assert not (tmp_path / "off" / "encoder.safetensors").exists()
    E_file = load_code_encoder(tmp_path / "on" / "encoder.safetensors", device="cpu")
    assert isinstance(E_file, CodeEncoder)
    E.load_state_dict(st["E_best"])
    with torch.no_grad():
        torch.testing.assert_close(E_file(x), torch.tanh(E(x)), rtol=0, atol=0)
    a, b = _weights(tmp_path / "on" / "encoder.safetensors"), _weights(tmp_path / "cut" / "encoder.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
