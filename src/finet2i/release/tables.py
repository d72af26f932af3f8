"""The columns of the finished-sample tables (package) and of the release's per-tar parquet indexes (assemble):
the release's 15 keys typed as finet2i.release.layout.FEATURES says, then where each sample came from.

Apart from finet2i.release.layout because it needs pyarrow, which the Snakefile does not import while planning.
"""

from __future__ import annotations

import pyarrow as pa

from finet2i.release import layout as release

_TYPES = {"string": pa.string(), "int64": pa.int64(), "bool": pa.bool_(), "float64": pa.float64()}


def arrow_type(spec: str | list[str]) -> pa.DataType:
    return pa.list_(_TYPES[spec[0]]) if isinstance(spec, list) else _TYPES[spec]


RELEASE_FIELDS = [pa.field(k, arrow_type(v)) for k, v in release.FEATURES.items()]
ORIGIN_FIELDS = [
    pa.field("subset", pa.string()),  # pipeline subset code (pe_ar ... real)
    pa.field("record_id", pa.string()),  # the pipeline's record id (pe_ar-00003-000017, real-00002-000005)
    pa.field("prompt_id", pa.string()),  # synthetic: the prompt's id, shared by its four subsets
    pa.field("source_id", pa.string()),  # real: the photo's id in its source (the locator for a folder)
    pa.field("subcategory", pa.string()),
    # real: the license its source's terms give it, and whether it may be redistributed (finet2i.sources.terms);
    # null for synthetic samples (the terms of the models that made them are in the dataset card)
    pa.field("license", pa.string()),
    pa.field("redistributable", pa.bool_()),
    pa.field("provenance", pa.string()),  # JSON: every other upstream column (seeds, verdicts, raw answers)
]
# Where each member's bytes lie in the tar (offset of the data, past its header; size in bytes), so a reader
# (``finet2i explore``) seeks straight to an image instead of scanning the tar: jpg_offset, jpg_size, ...
MEMBER_FIELDS = [pa.field(f"{ext}_{what}", pa.int64()) for ext in release.MEMBERS for what in ("offset", "size")]
# One row per sample of a release tar, in tar order.
INDEX_SCHEMA = pa.schema([*RELEASE_FIELDS, *ORIGIN_FIELDS, pa.field("tar", pa.string()), *MEMBER_FIELDS])
