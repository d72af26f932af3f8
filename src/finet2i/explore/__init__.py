"""``finet2i explore``: a local web app over a run's outputs (docs/explore.md).

- ``catalog``: the catalog of a run's outputs (one DuckDB connection) and its samples: the release's parquet
  indexes loaded once, queried for facets, search, pages and one sample;
- ``dropped``: the catalog's stage half: the stages' record tables queried in place (what each stage dropped,
  by reason, with its evidence) and the funnel;
- ``query``: the grid's filters as they travel in the URL, the names a request may carry, ``ExploreError``;
- ``media``: image bytes by seeking into the release tars at the offsets the index records, thumbnails made
  on demand and cached, and the one function that turns a requested path into a file under RESULTS_DIR;
- ``pages``: the HTML (jinja2 templates with autoescape: every prompt and model answer is shown as text);
- ``server``: the HTTP server (standard library, binds 127.0.0.1 unless told otherwise);
- ``static``: the self-contained export (``--static OUT --per-facet N``) that works from ``file://``.

Nothing here is imported by the workflow; duckdb and jinja2 are imported when a catalog or a page is made.
"""
