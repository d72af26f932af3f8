import os

from finet2i.dedup import DedupSettings
from finet2i.shards import read_json
from finet2i.stages.dedup import run_dedup_cross
from finet2i.workflow import adapter


def assign_files(manifest_path: str) -> tuple[list[str], list[str]]:
    """The assign files listed by dedup_manifest (see rules/dedup.smk; same check as dedup_group.py)."""
    manifest = read_json(manifest_path)
    for path, size in manifest["bytes"].items():
        if not os.path.exists(path) or os.path.getsize(path) != size:
            raise FileNotFoundError(f"{path}: missing or changed since {manifest_path} was written; "
                                    f"rerun with `snakemake --forcerun dedup_manifest`")
    return list(manifest["index"]), list(manifest["vectors"])


def main(smk) -> None:
    run = adapter(smk)
    import torch

    torch.set_num_threads(run.threads)
    settings = DedupSettings.from_config(run.section("dedup"), seed=int(smk.params.seed))
    index, vectors = assign_files(smk.input.manifest)
    run_dedup_cross(list(smk.input.groups), index, vectors, smk.output.verdicts, smk.output.kept_ids,
                    smk.output.stats, settings=settings)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
