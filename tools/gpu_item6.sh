#!/usr/bin/env bash
# Issue #12 item 6, the one GPU call: BEGAN at 64 px (embedded default) and at the paper's
# 128 px setting (configs/paper-celeba.yaml's began section) on the rendered world, each
# with its own judge, for a wall-clock budget, measured there (tools/gpu_item6.py says how).
#
# Before the call, here (the wheels of what the GPU machine lacks, ~2.6 MB, git-ignored):
#   grep -qx /.whl/ .git/info/exclude || echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl pydantic-core==2.46.4
#   for p in pydantic==2.13.4 annotated-types==0.7.0 typing-inspection==0.4.2 typing-extensions==4.16.0; do
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform any -d .whl $p; done
#
# The call (one; it writes gpu_item6.json after every phase, so a kill still leaves figures):
#   run(command="bash tools/gpu_item6.sh", carry=[".whl"], timeout_s=560)
# It returns 6 files from $OUT: gpu_item6.json, gpu_item6.log, G_default64.safetensors,
# G_paper128.safetensors, grid_default64.png, grid_paper128.png.
#
# Then back on the CPU, dlib's face-found rate on 500 G(z), z = sample_z(500, z_dim, seed=123)
# (dlib is not on the GPU machine; FILES = the run's files_at folder):
#   python tools/gpu_item6.py --dlib FILES/G_default64.safetensors FILES/G_paper128.safetensors \
#     --threads 1 --workers 1 --out /tmp/gpu_item6_dlib        # -> /tmp/gpu_item6_dlib/gpu_item6_dlib.json
#
# Time: the driver must be done 470 s after it starts (--deadline; a hard `timeout` at 500 s),
# so the whole command stays under ~8.5 minutes: 64 px trains for 165 s, 128 px for up to 240 s
# (less if rendering / judges / quality ran longer than planned), plus rendering, two judges
# (3,000 steps each) and quality. Override with SECONDS_64, SECONDS_128, DEADLINE.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_item6_out}
mkdir -p "$OUT"
LOG="$OUT/gpu_item6.log"
{
  echo "== $(date -u '+%F %T') UTC, $(nproc) cores, $(hostname)"
  if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl
  else
    echo "no .whl/ carried: pydantic must already be importable"
  fi
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
  nvidia-smi || echo "nvidia-smi not found"
  python3 -c "import torch, pydantic, facelm.config; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), '| pydantic', pydantic.VERSION)"
  timeout -k 5 500 python3 tools/gpu_item6.py --device cuda --out "$OUT" \
    --seconds "${SECONDS_64:-165}" "${SECONDS_128:-240}" --deadline "${DEADLINE:-470}"
  echo "== driver exit status $? at $(date -u '+%T') UTC"
  ls -la "$OUT"
} 2>&1 | tee "$LOG"
