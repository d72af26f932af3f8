from finet2i.sources import listed_name
from finet2i.sources.listing import run_listing
from finet2i.workflow.adapter import adapter


def main(smk) -> None:
    run = adapter(smk)  # logging into the rule's log
    # The whole entry, pacing keys included (the params leave those out: they change no manifest).
    entry = next(s for s in run.section("curated")["sources"]
                 if isinstance(s, dict) and s.get("type") and listed_name(s) == smk.wildcards.source)
    run_listing(entry, smk.output.manifest, smk.output.stats)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
