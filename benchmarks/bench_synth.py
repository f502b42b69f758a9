"""Faces/s of ``facelm synth`` against a naive loop, measured in the same run.

Naive baseline: one face at a time — z -> G -> uint8 -> cv2.imwrite PNG and write_pts inline,
the way such a script is usually first written. facelm: ``synth()`` (batched inference under
inference_mode, PNG encoding/writing in a thread pool while the next batch is computed).
Both are measured with PNG writing included and excluded (excluded: the naive loop only
computes; facelm writes the ``npz`` format, i.e. memory-mapped .npy arrays, and, for
reference, plain batched inference with no output at all).

Models have random (untrained) weights of the real architectures: 32 px = the CPU default
(Generator(size=32, width=16)), 128 px = the paper (Generator(size=128, width=64)). The last
layer is scaled up so images are textured rather than flat grey, which keeps PNG encoding
cost in a realistic range.

    python benchmarks/bench_synth.py [--device cpu|cuda] [--threads N] [--bf16]
                                     [--repeat 3]
                                     [--n32 1000] [--n128 64] [--naive32 200] [--naive128 8]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import torch

from facelm.models.began import Generator, load_generator, save_model
from facelm.landmarks import to_pixels, write_pts
from facelm.models.lgen import LGen, load_lgen, save_lgen
from facelm.apps.synth import latents, synth
from facelm.tensors import to_uint8


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def naive(g_path, l_path, n: int, device: torch.device, out: Path | None) -> float:
    """One face at a time; PNG + .pts written inline when ``out`` is given. Faces/s."""
    G, L = load_generator(g_path, device), load_lgen(l_path, device)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        z = torch.from_numpy(latents(0, 2, z_dim=G.z_dim)).to(device)
        G(z[:1]), L(z[:1])  # warm-up
        sync(device)
        t0 = time.perf_counter()
        for i in range(n):
            z = torch.from_numpy(latents(i, i + 1, z_dim=G.z_dim)).to(device)
            img = to_uint8(G(z))[0]
            lm = L(z)[0].cpu().numpy()
            if out is not None:
                cv2.imwrite(str(out / f"{i:08d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
                write_pts(out / f"{i:08d}.pts", to_pixels(lm, img.shape[1], img.shape[0]))
        sync(device)
    return n / (time.perf_counter() - t0)


def batched_inference(g_path, l_path, n: int, batch: int, device: torch.device,
                      bf16: bool) -> float:
    """What synth computes (channels-last G), with no output at all. Faces/s."""
    G, L = load_generator(g_path, device), load_lgen(l_path, device)
    G = G.to(memory_format=torch.channels_last)
    z_all = latents(0, n, z_dim=G.z_dim)
    with torch.inference_mode():
        def step(z_np):
            z = torch.from_numpy(z_np).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                x = G(z)
            return to_uint8(x), L(z).float().cpu().numpy()
        step(z_all[:batch])  # warm-up
        sync(device)
        t0 = time.perf_counter()
        for s in range(0, n, batch):
            step(z_all[s:s + batch])
        sync(device)
    return n / (time.perf_counter() - t0)


def facelm_synth(g_path, l_path, n: int, batch: int, device: torch.device, fmt: str,
                 out: Path, bf16: bool) -> float:
    synth(g_path, l_path, out / f"warm-{fmt}", batch, batch_size=batch, device=device, fmt=fmt,
          progress=False, bf16=bf16)
    t0 = time.perf_counter()
    synth(g_path, l_path, out / fmt, n, batch_size=batch, device=device, fmt=fmt,
          shard_size=max(1000, batch), progress=False, bf16=bf16)
    return n / (time.perf_counter() - t0)


def make_models(work: Path, size: int, width: int) -> tuple[Path, Path, int]:
    """Random-weight G (last layer scaled up: textured faces) and L-Gen saved under ``work``:
    (generator path, L-Gen path, G's parameter count)."""
    G = Generator(size=size, width=width, z_dim=64, seed=1)
    with torch.no_grad():
        G.body[-1].weight.mul_(30.0)
    g_path, l_path = work / f"g{size}.safetensors", work / "l.safetensors"
    save_model(g_path, G)
    save_lgen(l_path, LGen(seed=2))
    return g_path, l_path, sum(p.numel() for p in G.parameters())


def bench(size: int, width: int, n: int, n_naive: int, batch: int, device: torch.device,
          bf16: bool, work: Path, repeat: int) -> None:
    g_path, l_path, n_params = make_models(work, size, width)
    runs = {
        "naive, PNG written": lambda k: naive(g_path, l_path, n_naive, device,
                                              work / f"naive{size}-{k}"),
        "naive, no output": lambda k: naive(g_path, l_path, n_naive, device, None),
        "facelm synth, pts (PNG written)": lambda k: facelm_synth(
            g_path, l_path, n, batch, device, "pts", work / f"synth{size}-{k}", bf16),
        "facelm synth, npz (no PNG)": lambda k: facelm_synth(
            g_path, l_path, n, batch, device, "npz", work / f"synth{size}-{k}", bf16),
        "batched inference, no output": lambda k: batched_inference(
            g_path, l_path, n, batch, device, bf16),
    }
    # interleaved repeats, best of each: a shared machine's load hits all variants alike
    r = {name: 0.0 for name in runs}
    for k in range(repeat):
        for name, fn in runs.items():
            r[name] = max(r[name], fn(k))
    print(f"\n{size} px, G width {width} ({n_params:,} params), "
          f"{device}{' bf16' if bf16 else ''}, batch {batch}, {n} faces (naive: {n_naive})")
    for name, fps in r.items():
        print(f"  {name:34s} {fps:10.1f} faces/s")
    print(f"  ratio, PNG written: synth pts / naive       = "
          f"{r['facelm synth, pts (PNG written)'] / r['naive, PNG written']:.1f}x")
    print(f"  ratio, no PNG: synth npz / naive no output  = "
          f"{r['facelm synth, npz (no PNG)'] / r['naive, no output']:.1f}x")
    print(f"  ratio, inference only: batched / naive      = "
          f"{r['batched inference, no output'] / r['naive, no output']:.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--bf16", action="store_true", help="G under bf16 autocast (GPU)")
    ap.add_argument("--n32", type=int, default=1000, help="faces at 32 px (default 1000)")
    ap.add_argument("--n128", type=int, default=64, help="faces at 128 px (default 64)")
    ap.add_argument("--naive32", type=int, default=200, help="naive faces at 32 px")
    ap.add_argument("--naive128", type=int, default=8, help="naive faces at 128 px")
    ap.add_argument("--repeat", type=int, default=3,
                    help="interleaved repeats, best kept (128 px: one fewer; default 3)")
    ap.add_argument("--batch32", type=int, default=256)
    ap.add_argument("--batch128", type=int, default=32)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    work = Path(tempfile.mkdtemp(prefix="bench_synth."))
    try:
        bench(32, 16, args.n32, args.naive32, args.batch32, device, args.bf16, work,
              args.repeat)
        bench(128, 64, args.n128, args.naive128, args.batch128, device, args.bf16, work,
              max(1, args.repeat - 1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
