from finet2i.sources.listing import run_listing
from finet2i.workflow.adapter import adapter


def main(smk) -> None:
    run = adapter(smk)  # logging into the rule's log
    # The whole entry: what the manifest depends on (settings) and the keys that pace the listing (runtime).
    run_listing(run.settings, smk.output.manifest, smk.output.stats)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
