"""GPU-hours of a configured run, per GPU stage and in total, from published or measured rates (the logic:
finet2i.preflight.gpu_hours; the budget fit: `finet2i plan`).

    .venv/bin/python benchmarks/plan.py                                       # production config, published rates
    .venv/bin/python benchmarks/plan.py --configfile config/demo.yaml --rates my-rates.json --json

Every figure is marked published (benchmarks/rates.published.json: a public source, its GPU, precision and
workload, and why it applies) or measured (raw output under benchmarks/measured/); a stage without one is "not
measured" and stays out of the total. See finet2i.preflight.gpu_hours for the arithmetic.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from finet2i.preflight.gpu_hours import (  # noqa: E402  (the package, from this checkout)
    STAGES,
    Row,
    as_json,
    items_per_stage,
    job_counts,
    load_rates,
    plan,
    render,
)

__all__ = ["STAGES", "Row", "items_per_stage", "jobs_per_rule", "plan", "render", "main"]
jobs_per_rule = job_counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", default="config/config.yaml")
    parser.add_argument("--rates", action="append", type=Path,
                        help="rates file(s), merged in order [default: benchmarks/rates.published.json]")
    parser.add_argument("--json", action="store_true", help="every row as JSON")
    args = parser.parse_args(argv)
    from finet2i.workflow.config import load_config

    configfile = ROOT / args.configfile if not Path(args.configfile).is_absolute() else Path(args.configfile)
    config = load_config(configfile, base_dir=ROOT, check_models=False)
    rates = load_rates(*(args.rates or [ROOT / "benchmarks" / "rates.published.json"]))
    rows = plan(config, jobs_per_rule(config, [configfile], ROOT), rates, ROOT)
    print(json.dumps(as_json(rows), indent=1) if args.json else render(rows, rates, args.configfile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
