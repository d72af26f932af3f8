"""Models: how a stage names one (spec), the files finet2i knows how to get (known), the production
backends (backends/) and the `fetch-models` command (fetch)."""
