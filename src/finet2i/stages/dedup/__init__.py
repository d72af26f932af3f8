"""Stage ``dedup``, exact semantic dedup (paper 3.1.2): groups, then a cross-group pass; cosine > threshold.

The keep rule (documented, deterministic, partition-free)
---------------------------------------------------------
Every prompt has a *rank*: its position in the run's global order (shard number, then row in the shard; in
the pipeline that is id order). Walking the prompts in rank order, a prompt is **kept** unless an already
kept, earlier prompt has cosine > threshold with it; then it is dropped with ``duplicate_of`` = the most
similar such kept prompt we found and ``similarity`` = that cosine. This is the greedy maximal independent
set of the duplicate graph in rank order, which is what the all-pairs baseline computes too. Why this rule:

* The kept set depends on the vectors and the order only, never on the number of groups, the partition or
  the block sizes: the grouped pipeline returns *exactly* the baseline's kept set.
* The earliest prompt survives, so appending new shards never flips a verdict made before.
* No kept pair has cosine > threshold (every kept prompt was compared with every earlier kept one), and
  every dropped prompt names a kept prompt above the threshold.

How the grouped pipeline gets the exact answer cheaply
------------------------------------------------------
1. Groups: spherical k-means centroids (faiss) trained on a sample; each vector goes to its most similar
   centroid, so most near-duplicates share a group (SemDeDup). ``partition: hash`` is the paper's plain split.
2. Within each group, the same greedy sweep in rank order. Its survivors ``A_g`` are a superset of the
   group's globally kept prompts, except for rare "resurrections" (below). For each prompt it drops it stores
   up to ``max_neighbors`` earlier survivors above the threshold (the evidence the cross pass reuses).
3. Cross-group pass: the greedy sweep over all prompts in rank order, where only the group survivors (and
   the prompts whose stored neighbours were all dropped, whose vectors are fetched on demand) are
   compared, in blocks, against the kept set so far. A prompt dropped in its group is dropped for good as
   soon as one of its stored neighbours is kept: that neighbour is earlier, kept and above the threshold.
   When all its stored neighbours were dropped, the kept prompts that dropped them are checked first (in
   dense clusters they nearly always drop it too); only if none is above the threshold is it compared.
   The pass is exact: every kept prompt was compared with every earlier kept prompt.

Similarities: products run in bfloat16 on CPUs with AVX-512/AMX, float16 on GPUs (the stored vectors are
float16, so GPU inputs are exact) or float32, and only select *candidates* above ``threshold - margin``,
where the margin bounds the rounding error of that precision; a candidate pair whose earlier prompt is kept
is then recomputed in float64 from the stored float16 vectors (exact in any summation order, see
``similarity._exact_pairs``), and a block is decided in vectorised rounds (see ``sweep._decide_in_rounds``);
pairs between two dropped prompts are never looked at. Decisions therefore never depend on the hardware or on
blocking.

Memory plan at production scale (44.8M prompts = 1,120 shards x 40k, 384-d float16 = 768 B per prompt;
all vectors as float32 would be 69 GB, as float16 34 GB; no job holds them all):

* embed (per shard): the model (90 MB) and one shard (31 MB of vectors). Table: docs/dedup.md.
* dedup_centroids (1 job): streams the shards one at a time, keeps a ``kmeans_sample`` (1M x 384 fp32,
  1.5 GB) and trains 128 centroids on it: ~3 GB.
* dedup_assign (per shard): one shard, ~20 MB.
* dedup_group (per group): memory-maps its slice of each shard's group-sorted vectors; a group averages
  350k prompts (270 MB) and k-means groups are uneven (up to ~4x the mean), plus the kept-so-far copy of
  the same size: <= 3 GB.
* dedup_cross (1 job): per-prompt arrays (rank, in-group verdict, file location, stored neighbours, outputs:
  ~70 B x 44.8M = 3.2 GB), the kept set so far (~5.6M x 768 B = 4.3 GB on the host, and the same on the GPU
  or as bfloat16 on a CPU); vectors of the prompts it compares are read on demand from the memory-mapped
  assign files: ~12 GB RAM + ~4.5 GB GPU.
* dedup (per shard, the keep job): its slice of the memory-mapped verdicts and one shard: < 1 GB.

Modules, each importing only those listed above it
--------------------------------------------------
* ``settings``: ``DedupSettings``, the ``dedup`` config section (defaults from the schema) and the run's seed.
* ``vectors``: ``check_vectors`` (what dedup accepts, with errors that name the file), ``normalise``.
* ``ranks``: a prompt's rank (shard, then row) and its bit layout; ``NO_DUP``.
* ``partition``: k-means centroids, each vector's group (k-means or hash), the Fig. 3 similarity histogram.
* ``similarity``: ``Matcher`` (low-precision candidate pairs) and the exact float64 cosines that decide.
* ``sweep``: the greedy sweep in blocks: the kept set, stored evidence (CSR ``Neighbors``), decision rounds.
* ``passes``: the group pass and the cross pass over the sweep (``CrossInput`` -> ``CrossResult``).
* ``in_memory``: ``dedup_vectors``, the whole pipeline in one process (``finet2i dedup``, tests, benchmarks).
* ``reference``: brute force (``greedy_reference``, ``residual_pairs``), for tests and benchmarks.
* ``jobs``: the workflow's file-level jobs over partition, sweep and passes. It imports neither ``in_memory``
  nor ``reference``, so an edit of those reruns no rule (``finet2i.core.codehash``).
"""
