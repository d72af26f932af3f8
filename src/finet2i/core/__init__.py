"""The workflow core: the pipeline's declaration, stage settings, shard tables, the chunked runner, batching
and code fingerprints. It knows no model, no stage and no release format; everything else builds on it."""
