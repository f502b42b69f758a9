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

from facelm.models.began import Discriminator, Generator, load_generator
from facelm.training.began import BEGANLoss, _derive_seed, _match_layout, train_began
from facelm.checkpoint import load_state, load_weights, state_digest

torch.set_num_threads(1)  # determinism between the in-process runs and the subprocesses
ROOT = Path(__file__).resolve().parents[1]
TINY = dict(size=32, width=4, z_dim=8, batch_size=4, progress=False, sample_every=0)


@pytest.fixture(scope="module")
def images():
    """A few dozen uniform-colour 32 px images (easy for the auto-encoder)."""
    cols = np.random.default_rng(0).integers(0, 256, (24, 1, 1, 3), dtype=np.uint8)
    return np.broadcast_to(cols, (24, 32, 32, 3)).copy()


# ----------------------------------------------------------------------------- loss math
def test_recon_loss_eta():
    v = torch.tensor([[0.0, 1.0], [-1.0, 0.5]])
    rec = torch.tensor([[0.5, 1.0], [0.0, 0.0]])
    assert BEGANLoss(eta=1).recon(v, rec).item() == pytest.approx((0.5 + 0 + 1 + 0.5) / 4)
    assert BEGANLoss(eta=2).recon(v, rec).item() == pytest.approx((0.25 + 0 + 1 + 0.25) / 4)


def test_k_update_and_clip():
    f = BEGANLoss(gamma=0.5, lambda_k=0.1)
    t = torch.tensor
    assert f.update_k(t(0.5), t(0.2), t(0.05)).item() == pytest.approx(0.5 + 0.1 * (0.1 - 0.05))
    assert f.update_k(t(0.0), t(0.2), t(0.9)).item() == 0.0  # clipped below
    assert BEGANLoss(0.5, 10.0).update_k(t(0.99), t(0.4), t(0.0)).item() == 1.0  # clipped above


def test_convergence_measure():
    f = BEGANLoss(gamma=0.5)
    assert f.convergence(torch.tensor(0.2), torch.tensor(0.3)).item() == pytest.approx(0.4)
    assert f.convergence(torch.tensor(0.2), torch.tensor(0.05)).item() == pytest.approx(0.25)


def test_d_and_g_loss_with_fixed_discriminators():
    f = BEGANLoss(gamma=0.5)
    x, fake = torch.full((2, 3, 4, 4), 0.5), torch.full((2, 3, 4, 4), -0.25)
    k = torch.tensor(0.2)
    loss_D, L_real, L_fake = f.d_loss(lambda v: torch.zeros_like(v), x, fake, k)
    assert (L_real.item(), L_fake.item()) == pytest.approx((0.5, 0.25))
    assert loss_D.item() == pytest.approx(0.5 - 0.2 * 0.25)
    assert f.g_loss(lambda v: v, fake).item() == 0.0  # a perfect auto-encoder


def test_bad_loss_args():
    with pytest.raises(ValueError, match="gamma"):
        BEGANLoss(gamma=0.0)
    with pytest.raises(ValueError, match="eta"):
        BEGANLoss(eta=0)


@pytest.mark.parametrize("k", [0.0, 0.3])
def test_joint_step_gradients_equal_two_backward_passes(k):
    torch.manual_seed(0)
    G, D = Generator(32, 4, 8, seed=1), Discriminator(32, 4, 8, seed=2)
    x, z, kt = torch.rand(3, 3, 32, 32) * 2 - 1, torch.rand(3, 8) * 2 - 1, torch.tensor(k)
    f = BEGANLoss()
    objective, L_real, L_fake = f.joint(G, D, x, z, kt)
    objective.backward()
    # reference: the authors' two gradients from the same forward, computed separately
    fake = G(z)
    ref_D = torch.autograd.grad(f.recon(x, D(x)) - kt * f.recon(fake.detach(), D(fake.detach())),
                                list(D.parameters()))
    ref_G = torch.autograd.grad(f.recon(fake, D(fake)), list(G.parameters()))
    for p, r in zip([*D.parameters(), *G.parameters()], [*ref_D, *ref_G]):
        torch.testing.assert_close(p.grad, r, rtol=1e-5, atol=1e-7)
    assert L_fake.item() == pytest.approx(f.recon(fake, D(fake)).item())


# ----------------------------------------------------------------------------- trainer
@pytest.mark.parametrize("update", ["joint", "alternate"])
def test_short_run_learns_and_writes_files(images, tmp_path, update):
    r = train_began(images, out_dir=tmp_path, steps=16, lr=1e-3, best_window=8,
                    checkpoint_every=0, update=update, **TINY)
    assert r.steps == 16 and r.M.shape == r.k.shape == (16,)
    assert r.L_real[-4:].mean() < r.L_real[:4].mean()  # the auto-encoder learns colours
    for name in ("generator.safetensors", "generator_last.safetensors",
                 "discriminator.safetensors", "checkpoint/state.pt"):
        assert (tmp_path / name).is_file(), name
    # the history obeys the BEGAN recurrences
    k_prev = np.concatenate([[0.0], r.k[:-1]])
    np.testing.assert_allclose(r.k, np.clip(k_prev + 0.001 * (0.5 * r.L_real - r.L_fake), 0, 1),
                               atol=1e-6)
    np.testing.assert_allclose(r.M, r.L_real + np.abs(0.5 * r.L_real - r.L_fake), rtol=1e-5)
    # "best" = lowest mean M over windows of 8 steps; generator.safetensors is that G
    windows = r.M.reshape(2, 8).mean(1)
    assert r.best_step == 8 * (int(np.argmin(windows)) + 1)
    assert r.best_M == pytest.approx(windows.min(), rel=1e-5)
    _, meta = load_weights(tmp_path / "generator.safetensors")
    assert meta["step"] == r.best_step and meta["role"] == "best"
    assert r.M_final == pytest.approx(float(r.M[-1]))


def test_callbacks_samples_and_lr_decay(images, tmp_path):
    events = []
    r = train_began(images, out_dir=tmp_path, steps=6, best_window=3, checkpoint_every=4,
                    lr=1e-3, lr_decay=0.5, lr_decay_every=2, **{**TINY, "sample_every": 3},
                    n_sample=5, callbacks=[lambda e, s: events.append((e, s))])
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


@pytest.mark.parametrize("kwargs, match", [
    ({"steps": 0}, "steps"), ({"batch_size": 0}, "batch_size"), ({"lr": 0.0}, "lr"),
    ({"gamma": 1.5}, "gamma"), ({"gamma": 0.0}, "gamma"), ({"size": 48}, "size"),
    ({"size": 64}, "images must be uint8"), ({"update": "both"}, "update"),
    ({"batch_size": 100}, "batch_size"), ({"lr_decay": 2.0}, "lr_decay"),
    ({"bf16": "yes"}, "bf16"),
])
def test_argument_validation(images, tmp_path, kwargs, match):
    args = {**TINY, "steps": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        train_began(images, out_dir=tmp_path, **args)
    with pytest.raises(ValueError, match="uint8"):
        train_began(images.astype(np.float32), out_dir=tmp_path, **{**TINY, "steps": 2})
    assert not (tmp_path / "checkpoint").exists()  # nothing done before validation


def test_cli_rejects_a_missing_file(tmp_path):
    from facelm.training.began import main
    with pytest.raises(FileNotFoundError, match="--images"):
        main(["--images", str(tmp_path / "none.npy"), "--out", str(tmp_path), "--size", "32",
              "--steps", "2"])


def test_changed_config_does_not_resume(images, tmp_path):
    base = dict(out_dir=tmp_path, steps=4, checkpoint_every=0, **TINY)
    first = train_began(images, **base)
    with pytest.warns(UserWarning, match=r"different configuration \(differs in: gamma\)"):
        fresh = train_began(images, **{**base, "gamma": 0.7})
    assert fresh.resumed_from is None
    assert list((tmp_path / "checkpoint").glob("stale-*.pt"))
    steps_seen = []
    again = train_began(images, **{**base, "gamma": 0.7},
                        callbacks=[lambda e, s: steps_seen.append(e)])
    assert again.resumed_from == 4 and "resume" in steps_seen and "step" not in steps_seen
    assert again.weights_digest == fresh.weights_digest != first.weights_digest
    # other data: no resume either
    with pytest.warns(UserWarning, match="data"):
        other = train_began(255 - images, **{**base, "gamma": 0.7})
    assert other.resumed_from is None


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
    _match_layout(opt2)
    for p, q in zip(G.parameters(), G2.parameters()):
        for key in ("exp_avg", "exp_avg_sq"):
            assert opt2.state[q][key].stride() == q.stride()
            assert torch.equal(opt2.state[q][key], opt.state[p][key])


_KILLED_RUN = """
import sys, time, numpy as np, torch
torch.set_num_threads(1)
from facelm.training.began import train_began
images = np.load(sys.argv[1])
slow = lambda event, state: time.sleep(0.2) if event == "step" else None  # time to be killed
train_began(images, out_dir=sys.argv[2], steps=int(sys.argv[3]), checkpoint_every=4,
            best_window=4, size=32, width=4, z_dim=8, batch_size=4, progress=False,
            sample_every=0, callbacks=[slow])
"""


def test_resume_after_sigkill_is_exact(images, tmp_path):
    steps, common = 12, dict(steps=12, best_window=4, **TINY)
    ref = train_began(images, out_dir=tmp_path / "ref", checkpoint_every=0, **common)

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

    resumed = train_began(images, out_dir=out, checkpoint_every=4, **common)
    assert resumed.resumed_from == killed_at
    for name in ("generator_last", "discriminator", "generator"):
        a, _ = load_weights(tmp_path / "ref" / f"{name}.safetensors")
        b, _ = load_weights(out / f"{name}.safetensors")
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    np.testing.assert_array_equal(resumed.M, ref.M)
    np.testing.assert_array_equal(resumed.k, ref.k)
    assert resumed.best_step == ref.best_step


def test_ddp_two_cpu_processes_keep_identical_replicas(images, tmp_path):
    np.save(tmp_path / "images.npy", images)
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "facelm.training.began", "--images", str(tmp_path / "images.npy"), "--out", str(out),
           "--size", "32", "--width", "4", "--z-dim", "8", "--batch-size", "4", "--steps", "3",
           "--best-window", "3", "--lr", "1e-3", "--device", "cpu", "--no-progress"]
    p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    reports = [json.loads(m) for m in re.findall(r'\{"rank".*?\}', p.stdout)]
    assert sorted(r["rank"] for r in reports) == [0, 1]
    assert all(r["world_size"] == 2 and r["steps"] == 3 for r in reports)
    assert reports[0]["weights_digest"] == reports[1]["weights_digest"]  # replicas agree
    # the files rank 0 wrote are those replicas, and training moved them off the init
    g, _ = load_weights(out / "generator_last.safetensors")
    d, _ = load_weights(out / "discriminator.safetensors")
    assert state_digest(g, d) == reports[0]["weights_digest"]
    init = load_state(out / "checkpoint" / "state.pt")
    assert init["step"] == 3 and len(init["rng"]) == 2  # one RNG state per rank
    assert not torch.equal(init["rng"][0]["sampler"]["perm"], init["rng"][1]["sampler"]["perm"])
    G0 = load_generator(out / "generator_last.safetensors")
    assert not torch.equal(G0.fc.weight, Generator(32, 4, 8, seed=_derive_seed(0, 1)).fc.weight)
