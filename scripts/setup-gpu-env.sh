#!/usr/bin/env bash
# The cluster environment in one command, on the login node:  bash scripts/setup-gpu-env.sh ENV
#
# Builds ENV, a Python 3.11 virtual environment holding exactly envs/gpu/requirements.lock (every file
# hash-checked: vllm 0.33.0, torch 2.14.0 for CUDA 13.0, transformers, diffusers, Snakemake and its Slurm
# plugin, ...) plus this checkout's finet2i (editable). Put ENV on a filesystem that the compute nodes mount at
# the same path: Snakemake and every job it submits run from it (`source ENV/bin/activate`, then snakemake;
# the Slurm plugin starts each job with the interpreter that started Snakemake). Needs PyPI (a login node has
# it), ~10 GB and 1-3 minutes; rerunning it is a no-op unless the lock changed. docs/gpu-environment.md says
# why this and not conda or a container, and what the GPU nodes need (NVIDIA driver R580+, compute
# capability >= 7.5).
#
# PYTHON=/path/to/python3.11: the interpreter to build from (default: python3.11 on PATH). It must exist at the
# same path on the compute nodes (the environment links to it): a site module or a shared install.
#
# FINET2I_ENV_BASE=/path/to/a/venv (tests, and machines without a GPU): instead of the lock, make ENV a thin
# layer over that existing environment (its packages, e.g. the demo's CPU builds, through a .pth file; ENV's
# own python and entry points). Seconds instead of minutes, so that the test cluster can run the README's
# first-run block as written; the GPU stack is not installed then.
set -euo pipefail
cd "$(dirname "$0")/.."
ENV=${1:?usage: bash scripts/setup-gpu-env.sh ENV   (a folder on a filesystem the compute nodes mount)}
case "$ENV" in /*) ;; *) ENV="$PWD/$ENV" ;; esac   # jobs run $ENV/bin/python by its absolute path
LOCK=envs/gpu/requirements.lock
stamp="$ENV/.finet2i-env"

if [ -n "${FINET2I_ENV_BASE:-}" ]; then
  base_py="$FINET2I_ENV_BASE/bin/python"
  [ -x "$base_py" ] || { echo "setup-gpu-env: FINET2I_ENV_BASE=$FINET2I_ENV_BASE has no bin/python" >&2; exit 1; }
  [ -x "$ENV/bin/python" ] || "$base_py" -m venv --without-pip "$ENV"
  site=$("$ENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  base_site=$("$base_py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # addsitedir also runs the base's .pth files (its editable finet2i).
  echo "import site; site.addsitedir('$base_site')" > "$site/finet2i-env-base.pth"
  for tool in finet2i snakemake; do  # ENV's own entry points: they must start ENV's python, not the base's
    sed "1s|^#!.*|#!$ENV/bin/python|" "$FINET2I_ENV_BASE/bin/$tool" > "$ENV/bin/$tool"
    chmod +x "$ENV/bin/$tool"
  done
  echo "base: $FINET2I_ENV_BASE (a stand-in over an existing environment, not the lock)" > "$stamp"
  echo "setup-gpu-env: $ENV ready (a layer over $FINET2I_ENV_BASE; the GPU stack of $LOCK is not in it)"
  exit 0
fi

want="lock: $(sha256sum "$LOCK" | cut -c1-16) src: $PWD"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup-gpu-env: $ENV is up to date with $LOCK"
  exit 0
fi
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || { echo "setup-gpu-env: $PY not found; set PYTHON=/path/to/python3.11" >&2; exit 1; }
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null \
  || { echo "setup-gpu-env: $PY is not Python 3.11 ($LOCK is locked for 3.11); set PYTHON" >&2; exit 1; }
[ -x "$ENV/bin/python" ] || "$PY" -m venv "$ENV"
# uv (from the lock, hash-checked) installs the rest: ~10x faster than pip on these 259 packages.
awk '/^uv==/{p=1} p{print} p&&!/\\$/{exit}' "$LOCK" > "$ENV/.uv-requirement.txt"
"$ENV/bin/python" -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r "$ENV/.uv-requirement.txt"
# --compile-bytecode: jobs never write __pycache__ concurrently on the shared filesystem.
"$ENV/bin/uv" pip sync --python "$ENV/bin/python" --require-hashes --compile-bytecode "$LOCK"
# finet2i itself, editable: the workflow and its package come from this checkout (setuptools is in the lock).
"$ENV/bin/uv" pip install --python "$ENV/bin/python" --no-deps --no-build-isolation -e .
echo "$want" > "$stamp"
"$ENV/bin/python" - <<'EOF'
import importlib.metadata as m
import sys

import torch

names = ("vllm", "torch", "transformers", "diffusers", "snakemake", "snakemake-executor-plugin-slurm")
print(f"setup-gpu-env: {sys.prefix} ready: python {sys.version.split()[0]}, "
      + ", ".join(f"{n} {m.version(n)}" for n in names) + f" (CUDA {torch.version.cuda})")
EOF
echo "next: source $ENV/bin/activate, then finet2i preflight --probe-gpu --profile profiles/slurm <config>"
