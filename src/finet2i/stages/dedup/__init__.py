"""Stage ``dedup`` (paper 3.1.2): the exact keep rule (algorithm) and the workflow's jobs over it (jobs)."""
