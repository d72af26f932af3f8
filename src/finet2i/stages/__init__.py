"""The pipeline's stages, one module each, in pipeline order:

specs -> prompts -> embed -> dedup -> guard -> attributes -> enhance -> generate -> pair_filter -> package,
plus the real-image branch (curated) and the report. Each module exposes a ``run_<stage>(...)`` function that
reads and writes shard files (see :mod:`finet2i.core.shards`) and pure helpers that tests call on records.
"""
