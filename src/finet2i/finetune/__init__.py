"""Does the dataset make a model better? The paper's section 5 as part of the workflow (docs/finetune.md).

* :mod:`~finet2i.finetune.data`: the release's samples, the over-long caption filter, the subset mixture, the
  resolution buckets and the seeded plan of every optimizer step;
* :mod:`~finet2i.finetune.train`: LoRA fine-tuning of an SD-XL-family pipeline (diffusers + peft + accelerate),
  with :mod:`~finet2i.finetune.checkpoints` that a killed job resumes from bitwise, and
  :mod:`~finet2i.finetune.launch`: one process, or one per GPU through ``accelerate launch``;
* :mod:`~finet2i.finetune.evaluate`: base against base + adapter on a fixed prompt set
  (:mod:`~finet2i.finetune.prompts`): aesthetic score, CLIPScore, the judge's pairwise preference
  (:mod:`~finet2i.finetune.judge`), GenEval when installed (:mod:`~finet2i.finetune.geneval`);
* :mod:`~finet2i.finetune.votes`: people's votes (``finet2i explore``'s /vote page) and their summary;
* :mod:`~finet2i.finetune.stats`: bootstrap and Wilson intervals, Cohen's kappa.

Layer 3 (docs/architecture.md): it reads the release (``release``) and runs models (``models``); the report
(``stages/report.py``) and the explorer read its votes and statistics.
"""
