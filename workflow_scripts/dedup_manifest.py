"""Lists every shard's dedup_assign outputs (paths and sizes) for the group and cross jobs.

The group and cross rules take this one file as input instead of 2 x shards files each, which keeps
`snakemake -n` fast at production size (see rules/dedup.smk); they read the file lists back from here.
"""

import os

from finet2i.core.shards import write_json
from finet2i.workflow.adapter import adapter


def main(smk) -> None:
    adapter(smk)
    index, vectors = list(smk.input.index), list(smk.input.vectors)
    write_json(smk.output.manifest, {
        "index": index,
        "vectors": vectors,
        # sizes let a reader notice an assign file rewritten (or truncated) after the manifest was made
        "bytes": {p: os.path.getsize(p) for p in index + vectors},
    })


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
