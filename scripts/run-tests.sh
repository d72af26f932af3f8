#!/usr/bin/env bash
# The test suite, as CI runs it. Assumes .venv exists (make test runs scripts/setup-env.sh first).
set -euo pipefail
cd "$(dirname "$0")/.."
# vLLM's workers talk over loopback; some sandboxes start with it down.
if command -v ip >/dev/null 2>&1 && ! ip addr show lo 2>/dev/null | grep -q "inet "; then
  ip link set lo up 2>/dev/null || true
fi
export TMPDIR="${TMPDIR:-/tmp}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# CI runs as root on Debian, where the Slurm tests can bring up their local cluster: there a skip is a failure.
if [ "${CI:-}" = "true" ]; then export FINET2I_SLURM="${FINET2I_SLURM:-1}"; fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
