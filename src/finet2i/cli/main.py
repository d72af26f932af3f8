"""The ``finet2i`` command: the demo, config checks, model fetching, and stage tools usable without Snakemake."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import click

log = logging.getLogger("finet2i")

DEMO_DIR = Path("resources/demo")
DEFAULT_CONFIG = Path("config/config.yaml")


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """finet2i: build a Fine-T2I-style text-to-image fine-tuning dataset with
    Snakemake, on a laptop (the demo) or a Slurm cluster (README.md).

    \b
    First steps:
      finet2i demo                          the pipeline on tiny offline models
      finet2i check-config my-run.yaml      is my config valid?
      finet2i fetch-models --pin my-run.yaml       download and pin the models
      finet2i preflight --profile profiles/slurm my-run.yaml   GO / NO-GO

    Commands that read configs take them as arguments or as --configfile
    (default config/config.yaml); several files are merged in order, as
    Snakemake's --configfile does.
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def config_files(func):  # type: ignore[no-untyped-def]
    """The config files of a command, as arguments (``finet2i check-config a.yaml``) or as ``--configfile``
    (``finet2i preflight --configfile a.yaml``), the two forms accepted alike: the command receives
    ``configfiles``, the arguments first, then each --configfile, default config/config.yaml."""
    import functools

    path = click.Path(exists=True, dir_okay=False, path_type=Path)

    @click.argument("config_args", metavar="[CONFIG]...", nargs=-1, type=path)
    @click.option("--configfile", "config_opts", multiple=True, type=path, metavar="FILE",
                  help="A config file (repeatable; the same as giving it as an argument). Files are merged in "
                       "order, as Snakemake's --configfile does. Default: config/config.yaml.")
    @functools.wraps(func)
    def wrapper(*args, config_args: tuple[Path, ...], config_opts: tuple[Path, ...], **kwargs):  # type: ignore[no-untyped-def]
        files = (*config_args, *config_opts) or (DEFAULT_CONFIG,)
        missing = [f for f in files if not f.exists()]
        if missing:
            raise click.BadParameter(f"{missing[0]} does not exist", param_hint="CONFIG")
        return func(*args, configfiles=files, **kwargs)

    return wrapper


@main.command("demo-models", short_help="Build the demo's tiny offline models.")
@click.option("--out", type=click.Path(path_type=Path), default=DEMO_DIR, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--force", is_flag=True, help="Rebuild even if the models exist.")
def demo_models(out: Path, seed: int, force: bool) -> None:
    """Build the demo's tiny random-weight models (real architectures) and real-image folder, offline."""
    from finet2i.demo.build import build_all

    build_all(out, seed=seed, force=force)


@main.command("check-config", short_help="Validate config files (and that their models are here).")
@config_files
@click.option("--no-models", is_flag=True, help="Skip the check that every model is available locally.")
def check_config(configfiles: tuple[Path, ...], no_models: bool) -> None:
    """Validate config files (merged in order, like --configfile) without Snakemake: the schema, the files they
    name, the curated sources and (unless --no-models) that every model the enabled stages load is here.
    Each error names the config file and the key."""
    from finet2i.workflow.config import ConfigError, check_available, load_config

    try:
        config = load_config(*configfiles, check_models=False)
        if config.get("demo"):  # the demo's fake photo APIs take a key of their own (rules/demo.smk sets it too)
            from finet2i.demo.fake_apis import demo_environment

            demo_environment()
        if not no_models:
            check_available(config, files=configfiles)
    except ConfigError as e:
        raise click.ClickException(str(e)) from e
    from finet2i.sources.terms import describe

    for i, entry in enumerate(config["curated"]["sources"] if config["curated"]["enabled"] else []):
        line = describe(entry, f"curated.sources[{i}]")
        if line:
            click.echo(line)
    click.echo("config OK")


@main.command("fetch-models", short_help="Download the models a config names (on a node with network).")
@config_files
@click.option("--pin", is_flag=True,
              help="Write the commit each revision resolved to back into the config file given that names it "
                   "(copy config/config.yaml or config/pilot.yaml first and pin your copy).")
@click.option("--accept-license", "accepted", multiple=True, metavar="KEY",
              help="Accept the license of the file model under models.KEY (e.g. aesthetic_head: AGPL-3.0) so "
                   "that it is downloaded; repeatable.")
@click.option("--dry-run", is_flag=True,
              help="List what would be fetched (and which hub repositories are gated) without downloading.")
@click.option("--allow-private-addresses", "allow_private", is_flag=True,
              help="Download files from loopback or private addresses too (a mirror on the local network); "
                   "off, a URL or a redirect to one is refused.")
@click.option("--max-bytes", type=click.IntRange(min=1), default=None,
              help="The most bytes a file download may have when finet2i does not know the file's size "
                   "(default 64 GiB); a known file is capped at its expected size plus a margin.")
@click.option("--deadline", "deadline_s", type=click.FloatRange(min=1), default=6 * 3600.0, show_default=True,
              help="Seconds one file download may take, connection to last byte.")
def fetch_models(configfiles: tuple[Path, ...], pin: bool, accepted: tuple[str, ...], dry_run: bool,
                 allow_private: bool, max_bytes: int | None, deadline_s: float) -> None:
    """Download every model the config names: hub models (their revision) into the Hugging Face cache, and
    missing local files that have a known or configured url (models.aesthetic_head: the published Aesthetic
    Predictor V2.5 head, AGPL-3.0, only with --accept-license aesthetic_head).

    Run once on a node with network (a login node); jobs never download. Gated hub repositories (Llama 3.1,
    Llama Guard 3) need their license accepted on their hub page and a token in HF_TOKEN. A model that cannot
    be fetched is reported and the others are still fetched; the command then exits 1 with what is missing
    and how to get it. With --pin, a branch such as `main` is replaced in the config by the commit that was
    downloaded, so that the run is reproducible and a later change of weights reruns the stages that use them."""
    from huggingface_hub import constants

    from finet2i.models.fetch import fetch_models as fetch
    from finet2i.models.spec import pin_revision_text
    from finet2i.workflow.config import ConfigError, load_config, used_model_keys

    try:
        config = load_config(*configfiles, check_models=False)
    except ConfigError as e:
        raise click.ClickException(str(e)) from e
    unknown = sorted({a.removeprefix("models.") for a in accepted} - set(config["models"]))
    if unknown:
        raise click.BadParameter(f"no such model key: {', '.join(unknown)}", param_hint="--accept-license")
    report = fetch(config, used_model_keys(config), accepted=accepted, dry_run=dry_run,
                   online=not constants.HF_HUB_OFFLINE, echo=click.echo, allow_private=allow_private,
                   max_bytes=max_bytes, deadline_s=deadline_s)
    if dry_run:
        return
    if pin:
        for path in configfiles:
            text = original = Path(path).read_text()
            changed = 0
            for model_id, commit in report.commits.items():
                text, n = pin_revision_text(text, model_id, commit)
                changed += n
            if text != original:
                Path(path).write_text(text)
            click.echo(f"{path}: {changed} revision(s) pinned")
    if report.missing:
        click.echo(f"\n{len(report.missing)} model(s) not fetched; to get them:")
        for item in report.missing:
            click.echo(f"  - {item}")
        sys.exit(1)


@main.command("demo", short_help="Run the whole pipeline on tiny offline models.")
@click.option("--cores", default="all", show_default=True)
@click.option("--rebuild-models", is_flag=True)
@click.option("--finetune", is_flag=True,
              help="Also fine-tune the tiny SD-XL on the demo's dataset and evaluate it (config/demo-finetune.yaml; "
                   "docs/finetune.md). Run after the demo, it adds only that.")
@click.argument("snakemake_args", nargs=-1, type=click.UNPROCESSED)
def demo(cores: str, rebuild_models: bool, finetune: bool, snakemake_args: tuple[str, ...]) -> None:
    """Build the demo models if needed, then run the whole DAG on config/demo.yaml with the local executor."""
    from finet2i.demo.build import build_all

    t0 = time.monotonic()
    build_all(DEMO_DIR, seed=0, force=rebuild_models)
    t1 = time.monotonic()
    configs = ["config/demo.yaml", *(["config/demo-finetune.yaml"] if finetune else [])]
    cmd = [sys.executable, "-m", "snakemake", "--profile", "profiles/local", "--configfile", *configs,
           "--cores", cores, *snakemake_args]
    click.echo(" ".join(cmd))
    rc = subprocess.call(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    t2 = time.monotonic()
    click.echo(f"demo: models {t1 - t0:.0f} s, workflow {t2 - t1:.0f} s, total {t2 - t0:.0f} s")
    if rc == 0:
        click.echo("dataset: results/dataset/  report: results/report/report.html "
                   "(demo output is not a dataset: tiny random models)")
        if finetune:
            click.echo("adapter: results/finetune/adapter/  evaluation: results/evaluate/metrics.json  vote: "
                       "finet2i explore results, then open /vote")
    sys.exit(rc)


@main.command("validate", short_help="Check a dataset folder against the released Fine-T2I layout.")
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--max-samples", type=click.IntRange(min=1), default=None,
              help="Stop after N samples per subset folder (a quick look at a huge folder).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON instead of a summary.")
def validate(dataset_dir: Path, max_samples: int | None, as_json: bool) -> None:
    """Check that DATASET_DIR (a dataset root or one subset folder) follows the released Fine-T2I layout.

    Exit status 0 when it does, 1 when any problem is found (see finet2i.release.validate for the checks)."""
    from finet2i.release.validate import validate_dataset

    report = validate_dataset(dataset_dir, max_samples=max_samples)
    click.echo(report.to_json() if as_json else report.summary())
    sys.exit(0 if report.ok else 1)


@main.command("explore", short_help="Browse a run's samples and dropped records in a web browser.")
@click.argument("results_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; the default answers this machine only. 0.0.0.0 shares it with the network.")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Thumbnails and the samples table [default: ~/.cache/finet2i/explore/<hash of RESULTS_DIR>].")
@click.option("--static", "static_out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write a self-contained export (HTML, thumbnails, images) to this folder instead of serving.")
@click.option("--per-facet", type=click.IntRange(min=1), default=12, show_default=True,
              help="With --static: samples exported per value of each facet (and per drop reason).")
def explore(results_dir: Path, port: int, host: str, cache_dir: Path | None, static_out: Path | None,
            per_facet: int) -> None:
    """Browse a run's outputs in a web browser: the samples (filters, search, detail views), what each stage
    dropped and why, and the funnel (docs/explore.md). RESULTS_DIR is the run's results folder."""
    from finet2i.explore.catalog import ExploreError
    from finet2i.explore.server import App, make_server

    try:
        app = App(results_dir, cache_dir)
        if static_out is not None:
            from finet2i.explore.static import export

            index = export(app, static_out, per_facet=per_facet)
            click.echo(f"static export: {index} (open it in a browser; the folder can be copied anywhere)")
            return
        server = make_server(app, host, port)
    except (ExploreError, OSError) as e:
        raise click.ClickException(str(e)) from e
    bound_host, bound_port = server.server_address[:2]
    click.echo(f"finet2i explore: {app.root} at http://{bound_host}:{bound_port}/ (Ctrl-C stops it)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@main.command("preflight", short_help="GO / NO-GO for a run: config, models, cluster, disk, GPUs.")
@config_files
@click.option("--profile", type=click.Path(exists=True, path_type=Path), default=None,
              help="The Snakemake profile to check against the live cluster (e.g. profiles/slurm).")
@click.option("--results", type=click.Path(path_type=Path), default=None,
              help="The results folder whose filesystem must hold the run (default: ./results, followed if it "
                   "is a symlink).")
@click.option("--probe-gpu", is_flag=True,
              help="Also submit one short job per GPU partition through the profile: it reports the node's GPU, "
                   "driver, CUDA, torch, vLLM's platform and diffusers, and runs a tiny model on the GPU "
                   "(NO-GO: a CPU vLLM, no GPU, a driver too old). Waits for a GPU like any job.")
@click.option("--gpus", type=click.IntRange(min=1), default=None,
              help="GPU jobs you expect to run at once: the shards whose generate tables exist together "
                   "(docs/disk.md) [default: 64].")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report (per-stage disk sizes too) as JSON.")
def preflight(configfiles: tuple[Path, ...], profile: Path | None, results: Path | None, probe_gpu: bool,
              gpus: int | None, as_json: bool) -> None:
    """Check a run before the first GPU-hour: config, models (present, pinned, on a shared filesystem), the
    profile against the live Slurm cluster (partitions, accounts, GPUs, memory and runtime of every rule at
    every attempt), disk for the whole run, and where the rules that download run. Submits nothing, unless
    --probe-gpu is given.

    Run it on the login node, in the workflow folder, from the environment the run will use. Exit status 0
    when everything is GO, 1 on any NO-GO."""
    from finet2i.preflight import run_preflight

    report = run_preflight(configfiles, profile=profile, results=results, probe_gpu=probe_gpu,
                           echo=lambda line: click.echo(line, err=True), gpus=gpus)
    click.echo(report.to_json() if as_json else report.table())
    sys.exit(0 if report.ok else 1)


@main.command("plan", short_help="What N GPU-hours buy, or what M samples cost.")
@click.argument("configfiles", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--configfile", "more_configfiles", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Config file(s), merged in order as --configfile does (or give them as arguments); "
                   "default config/config.yaml.")
@click.option("--gpu-hours", type=click.FloatRange(min=0, min_open=True), default=None,
              help="The budget: the largest run whose GPU-hours fit it.")
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help="Released synthetic samples wanted: the run that makes them, and what it costs.")
@click.option("--rates", "rates_files", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Rates file(s), merged in order [default: benchmarks/rates.published.json].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("plan.yaml"),
              show_default=True, help="Where to write the config that runs the plan (merged over yours).")
def plan_command(configfiles: tuple[Path, ...], more_configfiles: tuple[Path, ...], gpu_hours: float | None,
                 samples: int | None, rates_files: tuple[Path, ...], out: Path) -> None:
    """What a GPU-hour budget buys (--gpu-hours N), or what M released samples cost (--samples M), from published
    or measured rates (benchmarks/rates.published.json, every figure with its source) at the paper's yields.
    Writes the config that runs it (--out), to merge over yours: snakemake --configfile <yours> plan.yaml."""
    from finet2i.preflight import budget as fitting
    from finet2i.preflight.gpu_hours import RatesError, load_rates, render
    from finet2i.workflow.config import ConfigError, load_config

    if (gpu_hours is None) == (samples is None):
        raise click.UsageError("give exactly one of --gpu-hours N and --samples M")
    files = [*configfiles, *more_configfiles] or [Path("config/config.yaml")]
    try:
        config = load_config(*files, check_models=False)
        rates = load_rates(*(rates_files or [Path("benchmarks/rates.published.json")]))
    except (ConfigError, RatesError, OSError) as e:
        raise click.ClickException(str(e)) from e
    if gpu_hours is not None:
        fit, tried = fitting.fit_budget(config, gpu_hours, rates)
        ask = f"--gpu-hours {gpu_hours:g}"
        click.echo(f"the largest run that fits {gpu_hours:,.0f} GPU-hours (config: {', '.join(map(str, files))}):")
        click.echo("\n".join(f"  {line}" for line in fitting.describe(fit, gpu_hours)))
        if len(tried) > 1:
            click.echo("\nshapes tried (the recipe first; a smaller one only when not even one shard fits):")
            for t in tried:
                click.echo(f"  {t.shards:>9,} shard(s)  {t.gpu_hours:>12,.1f} GPU-h  {t.total_samples:>12,} samples"
                           f"  {t.shape.label()}")
    else:
        fit = fitting.fit_samples(config, samples, rates)
        ask = f"--samples {samples}"
        click.echo(f"{samples:,} released samples (config: {', '.join(map(str, files))}):")
        click.echo("\n".join(f"  {line}" for line in fitting.describe(fit)))
    if not fit.shards:
        sys.exit(1)
    click.echo("")
    click.echo(render(fit.rows, rates, f"the planned run ({fit.shards:,} shards)"))
    header = "\n".join([f"finet2i plan {ask}: {fit.shards:,} shard(s), {fit.shape.label()}",
                        *fitting.describe(fit, gpu_hours),
                        f"rates: {', '.join(map(str, rates_files or ['benchmarks/rates.published.json']))}",
                        f"run it over your config: snakemake --configfile {' '.join(map(str, files))} {out}"])
    fitting.write_config(fit, out, header)
    click.echo(f"\nwrote {out}: snakemake --profile profiles/slurm --configfile {' '.join(map(str, files))} {out}")


def _register_optional() -> None:
    # Stage tools live beside their stage; registering them here keeps `finet2i --help` complete.
    try:
        from finet2i.cli.dedup import dedup_command
    except ImportError:  # pragma: no cover - during development a stage may not exist yet
        return
    main.add_command(dedup_command, name="dedup")


_register_optional()
