#!/usr/bin/env bash
# Snakemake runs this inside the conda env of envs/finet2i.yaml right after creating it (--software-deployment-
# method conda), from the workflow folder: finet2i itself, from this checkout, without touching the pins.
set -euo pipefail
pip install --no-deps --no-build-isolation -e .
