#!/usr/bin/env bash
# CI-size `dvc repro` of a fresh clone, keeping its metrics: compare two commits' numbers with
#   tools/ci_size_repro.sh REPO_OR_URL OUTDIR [REV]; diff -r OUT_A/metrics OUT_B/metrics
set -euo pipefail
src=$1; out=$2; rev=${3:-HEAD}
rm -rf "$out"; mkdir -p "$out"
git clone -q "$src" "$out/p"
cd "$out/p"
git checkout -q "$rev"
python -m facelm profile configs/ci.yaml
git -c user.email=ci@local -c user.name=ci commit -qam "ci profile"
start=$(date +%s)
dvc repro > "$out/repro.log" 2>&1
echo "repro seconds: $(( $(date +%s) - start ))"
mkdir -p "$out/metrics"; cp metrics/*.json "$out/metrics/"
