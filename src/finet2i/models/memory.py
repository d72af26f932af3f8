"""How much GPU memory a stage's model needs at the configured batch, without loading it (preflight checks it
against the GPUs of the partition its jobs run in: finet2i.preflight.gpu_memory).

**Weights.** Counted from the model's own description: a language model's ``config.json`` fields (vocabulary,
hidden size, layers, attention and MLP widths; a vision-language model's ``text_config`` and ``vision_config``),
or, for a folder of ``*.safetensors`` files (a diffusers pipeline, the aesthetic head), the tensor shapes in their
headers (a few KB read per file; no weight is loaded). A model that is not on this machine (hub models before
``finet2i fetch-models``) is looked up in :data:`KNOWN`, sizes published for the production models, each with its
source. At the checkpoints' bf16 (2 bytes per parameter).

**At the configured batch.** A vLLM engine needs its weights, its activations for one scheduled batch (estimated:
a tenth of the weights), and the KV cache of at least one sequence of ``max_model_len`` tokens, within
``gpu_memory_utilization`` (0.85 here) of the card; more room only means more sequences at once. A diffusers
pipeline holds every component (text encoder, transformer, VAE) at once, or with ``cpu_offload`` the largest one
at a time, plus the activations of its largest call: ``images_per_call(batch_size, w, h)`` images of the largest
Table 8 size at :data:`ACTIVATION_GIB_PER_MP` per megapixel. These are estimates, labelled as such, not measurements.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GIB = 1024**3
BYTES_PER_PARAM = 2  # bf16
VLLM_GPU_MEMORY_UTILIZATION = 0.85  # finet2i.models.backends.vllm_llm.VLLMChat's default
# FLUX.2-dev in SGLang at 1024x1024, batch 1: "Peak GPU memory: 65.16 GB" with its 32B transformer (64.0 GB in bf16)
# resident (github.com/sgl-project/sglang/pull/16219): ~1.2 GB of activations for one megapixel. Derived, and
# used for both generators (Z-Image's transformer is five times smaller: an upper bound for it).
ACTIVATION_GIB_PER_MP = (65.16 - 64.0) * 1e9 / GIB


@dataclass(frozen=True)
class Known:
    """A published size: parameters (in billions) per component, and where the numbers come from."""

    components: Mapping[str, float]
    source: str
    kv_bytes_per_token: int | None = None  # language models: 2 (K, V) x layers x kv heads x head dim x 2 bytes


_LLAMA_8B_KV = 2 * 32 * 8 * 128 * BYTES_PER_PARAM
KNOWN: dict[str, Known] = {
    "meta-llama/Llama-3.1-8B-Instruct": Known({"model": 8.03}, "HF safetensors metadata '8.03B params' of the "
                                              "checkpoint's copies (e.g. huggingface.co/nreHieW/Llama-3.1-8B-Instruct)",
                                              _LLAMA_8B_KV),
    "meta-llama/Llama-Guard-3-8B": Known({"model": 8.03}, "a Llama-3.1-8B fine-tune (its model card): that model's "
                                         "size", _LLAMA_8B_KV),
    "Qwen/Qwen3-VL-8B-Instruct": Known({"language model": 8.191, "vision encoder": 0.5764},
                                       "huggingface.co/OpenExplorer/Qwen3-VL-8B-Instruct: 'Language model (LM) "
                                       "parameters 8.191B', 'Vision model (ViT) parameters 576.4M'",
                                       2 * 36 * 8 * 128 * BYTES_PER_PARAM),
    "Qwen/Qwen3-VL-8B-Thinking": Known({"language model": 8.191, "vision encoder": 0.5764},
                                       "the Instruct model's architecture (huggingface.co/OpenExplorer/"
                                       "Qwen3-VL-8B-Instruct)", 2 * 36 * 8 * 128 * BYTES_PER_PARAM),
    "Ertugrul/Qwen2.5-VL-7B-Captioner-Relaxed": Known({"language model": 7.616, "vision encoder": 0.6766},
                                                      "its base model, huggingface.co/OpenExplorer/"
                                                      "Qwen2.5-VL-7B-Instruct: 'LM 7.616B', 'ViT 676.6M'",
                                                      2 * 28 * 4 * 128 * BYTES_PER_PARAM),
    "PromptEnhancer/PromptEnhancer-7B": Known({"model": 8.0}, "a Hunyuan-7B-Instruct fine-tune (PromptEnhancer's "
                                              "README); Hugging Face lists tencent/Hunyuan-7B-Pretrain as 8B",
                                              _LLAMA_8B_KV),
    "Tongyi-MAI/Z-Image-Turbo": Known({"transformer": 6.15, "text_encoder": 4.02, "vae": 0.084},
                                      "Z-Image README ('6B parameters'; 6.15B in the technical report); its "
                                      "text encoder is Qwen3-4B (4.02B, its model card); VAE ~84M"),
    "black-forest-labs/FLUX.2-dev": Known({"transformer": 32.0, "text_encoder": 24.0, "vae": 0.084},
                                          "huggingface.co/blog/flux-2 ('FLUX.2 [dev] 32B'; text encoder Mistral "
                                          "Small 3.1, 24B); BFL: 'Even an H100 can't hold the text-encoder, "
                                          "transormer and VAE at the same time' (docs/flux2_dev_hf.md)"),
    "google/siglip-so400m-patch14-384": Known({"vision tower": 0.42823},
                                              "timm's benchmark CSV: vit_so400m_patch14_siglip_384 param_count "
                                              "428.23 (M)"),
    "sentence-transformers/all-MiniLM-L6-v2": Known({"model": 0.0227}, "sbert.net's model table (80 MB file)"),
}


@dataclass
class Weights:
    """A model's parameters per component (in parameters, not bytes), and how they are known."""

    components: dict[str, float]
    how: str
    kv_bytes_per_token: int | None = None
    context: int | None = None  # max_position_embeddings, when the config says

    @property
    def params(self) -> float:
        return sum(self.components.values())

    def gib(self, component: str | None = None) -> float:
        n = self.components[component] if component else self.params
        return n * BYTES_PER_PARAM / GIB


@dataclass
class Need:
    """What one job of a stage holds on its GPU, in GiB, and why."""

    model: str
    gib: float
    parts: dict[str, float] = field(default_factory=dict)  # what the total is made of
    how: str = ""

    def text(self) -> str:
        return f"~{self.gib:.1f} GiB (" + ", ".join(f"{k} {v:.1f}" for k, v in self.parts.items()) + ")"


def lm_params(cfg: Mapping[str, Any]) -> tuple[float, int | None] | None:
    """A transformer language model's parameters from its config fields, and its KV-cache bytes per token; None
    when the fields are not there."""
    try:
        h, layers = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"])
        inter = int(cfg["intermediate_size"])
        vocab = int(cfg.get("vocab_size") or 0)
    except (KeyError, TypeError, ValueError):
        return None
    heads = int(cfg.get("num_attention_heads") or 1)
    head_dim = int(cfg.get("head_dim") or h // heads)
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    if cfg.get("model_type") == "bert":  # an encoder: q, k, v, o, two MLP matrices, no lm head
        per_layer = 4 * h * h + 2 * h * inter
        return float(vocab * h + layers * per_layer), None
    per_layer = h * heads * head_dim * 2 + 2 * h * kv_heads * head_dim + 3 * h * inter + 2 * h
    embed = vocab * h * (1 if cfg.get("tie_word_embeddings") else 2)
    return float(embed + layers * per_layer + h), 2 * layers * kv_heads * head_dim * BYTES_PER_PARAM


def vision_params(cfg: Mapping[str, Any]) -> float:
    """A vision encoder's parameters from its config (ViT blocks: attention 4 h^2, MLP 2 h x intermediate)."""
    h = int(cfg.get("hidden_size") or cfg.get("embed_dim") or 0)
    layers = int(cfg.get("depth") or cfg.get("num_hidden_layers") or 0)
    inter = int(cfg.get("intermediate_size") or 4 * h)
    return float(layers * (4 * h * h + 2 * h * inter))


def safetensors_params(folder: Path) -> float:
    """Parameters in a folder's ``*.safetensors`` files, from their headers (the weights are not read)."""
    total = 0.0
    for f in sorted(folder.rglob("*.safetensors")):
        with open(f, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        total += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    return total


def from_folder(path: str | Path) -> Weights | None:
    """A model's size from what its local folder (or file) describes, or None."""
    path = Path(path)
    cfg_file = path / "config.json"
    if path.is_dir() and cfg_file.exists():
        cfg = json.loads(cfg_file.read_text())
        text = cfg.get("text_config") or cfg
        lm = lm_params(text)
        if lm is not None:
            parts = {"language model" if "vision_config" in cfg else "model": lm[0]}
            if "vision_config" in cfg:
                parts["vision encoder"] = vision_params(cfg["vision_config"])
            ctx = text.get("max_position_embeddings")
            return Weights(parts, f"{cfg_file}'s fields", lm[1], int(ctx) if ctx else None)
    if path.is_dir() and (path / "model_index.json").exists():  # a diffusers pipeline: each component's weights
        parts = {sub.name: safetensors_params(sub) for sub in sorted(path.iterdir()) if sub.is_dir()}
        parts = {k: v for k, v in parts.items() if v}
        return Weights(parts, f"the safetensors headers under {path}") if parts else None
    if path.is_dir() and any(path.glob("*.safetensors")):
        return Weights({"model": safetensors_params(path)}, f"the safetensors headers under {path}")
    if path.is_file():  # a single weights file (the aesthetic head): its bytes at 2 per parameter is close enough
        return Weights({"model": path.stat().st_size / 4}, f"{path}'s size (fp32)")
    return None


def weights_of(spec: Any) -> Weights | None:
    """A model's size: from its local copy when there is one, else the published size of its hub id."""
    try:
        local = spec.local_path()
    except Exception:  # noqa: BLE001 - not on this machine: the published size, if known
        local = None
    found = from_folder(local) if local else None
    if found is not None:
        return found
    known = KNOWN.get(spec.id or "")
    if known is None:
        return None
    return Weights({k: v * 1e9 for k, v in known.components.items()}, f"published: {known.source}",
                   known.kv_bytes_per_token)


def vllm_need(w: Weights, name: str, *, max_model_len: int = 4096) -> Need:
    """A vLLM engine: weights, one batch's activations (estimated: a tenth of the weights, at least 1 GiB), and
    the KV cache of one max-length sequence (vLLM refuses to start without room for it)."""
    ctx = min(max_model_len, w.context or max_model_len)
    kv = (w.kv_bytes_per_token or 0) * ctx / GIB
    weights = w.gib()
    act = max(1.0, 0.1 * weights) if weights > 1 else 0.1 * weights
    return Need(name, weights + act + kv, {"weights": weights, "activations": act, f"KV of {ctx} tokens": kv},
                w.how)


def diffusion_need(w: Weights, name: str, *, cpu_offload: bool, megapixels: float, images: int) -> Need:
    """A diffusers pipeline: every component (or the largest, offloaded), plus its largest call's activations."""
    parts = {k: v * BYTES_PER_PARAM / GIB for k, v in w.components.items()}
    act = ACTIVATION_GIB_PER_MP * megapixels * images
    held = {f"{k} (largest; others offloaded)": v for k, v in [max(parts.items(), key=lambda kv: kv[1])]} \
        if cpu_offload else dict(parts)
    held[f"activations: {images} x {megapixels:.1f} MP"] = act
    return Need(name, sum(held.values()), held, w.how)
