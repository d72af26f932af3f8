"""finet2i: build a Fine-T2I-style text-to-image fine-tuning dataset.

The package holds the logic of every stage; the Snakemake rules under ``rules/`` and the thin adapters under
``workflow_scripts/`` only wire files to these functions. Importing the package is cheap: torch, vLLM and
diffusers are imported inside the backends that need them, so ``snakemake -n`` never pays for them.
"""

__version__ = "0.1.0"
