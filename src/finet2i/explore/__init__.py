"""``finet2i explore``: a local web app over a run's outputs (docs/explore.md).

- ``catalog``: the queries, in DuckDB over the release's parquet indexes (samples: facets, search, pages,
  one sample) and over the stages' record tables (what each stage dropped, by reason, with its evidence);
- ``media``: image bytes by seeking into the release tars at the offsets the index records, thumbnails made
  on demand and cached, and the one function that turns a requested path into a file under RESULTS_DIR;
- ``pages``: the HTML (jinja2 templates with autoescape: every prompt and model answer is shown as text);
- ``server``: the HTTP server (standard library, binds 127.0.0.1 unless told otherwise);
- ``static``: the self-contained export (``--static OUT --per-facet N``) that works from ``file://``.

Nothing here is imported by the workflow; duckdb and jinja2 are imported when a catalog or a page is made.
"""
