"""Tiny Llama-3-family chat models for the demo: the prompt writer (also the demo enhancer) and the guard.

Both are ``LlamaForCausalLM`` with Llama-3 special tokens and a Llama-3 chat template, saved like a hub
checkpoint (config.json, generation_config.json, safetensors, tokenizer files) and loaded by the real code
path (vLLM). The prompt model is trained for a minute or two on PartiPrompts, so that demo prompts read
like prompts:

- prompt task: the exact instruction :func:`finet2i.stages.prompts.build_messages` sends for a spec ->
  a PartiPrompts prompt of a matching length;
- enhance task: the enhancer's instruction + a prompt -> ``<think>...</think>\\n<answer>prompt + details
  </answer>``, the PromptEnhancer answer format.

The guard gets the Llama-Guard-3 chat template (safety task + S1-S14 list around the conversation) and a
few seconds of training towards ``safe`` / ``unsafe\\nS1``-style answers on PartiPrompts plus a handful of
obviously violent phrases. Neither model knows anything; they exist to run the real stages end to end.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from finet2i.demo.tokenizer import LLAMA3, partiprompt_rows

log = logging.getLogger(__name__)

LENGTH_BUCKETS = ((5, 10), (11, 20), (21, 35), (36, 60))
# Fallbacks when no taxonomy is given: the paper's 11 styles and five template instructions, abridged.
_STYLES = ("General & Photorealistic", "Graphic & Digital", "Anime", "Traditional/modern Art",
           "Cultural & Folk Art", "Abstract & Artistic", "3D Render", "Vintage & Retro", "Minimalist",
           "Fantasy & Sci-Fi", "Cinematic")
_TEMPLATES = (
    'Start the prompt with a simple lead-in such as "a photo of ...", then describe the subject.',
    'Phrase the prompt as a user asking an image generator for something, e.g. "Please help generate ...".',
    "Write the prompt as one or multiple complete sentences.",
    'Write one or more sentences, then append comma-separated tags such as "8K resolution, photorealistic".',
    'Write the prompt as a simple combination of words and short phrases separated by commas.',
)
_DETAILS = (
    "The scene is lit by soft natural light with gentle shadows.",
    "The main subject sits in the center of the frame, with a calm background behind it.",
    "Fine textures and clear edges are visible in the foreground.",
    "Warm colors dominate, with a few cool accents in the background.",
    "The composition is balanced, with plenty of space around the subject.",
    "The background is slightly blurred to keep the focus on the subject.",
)
_SUMMARIES = ("Overall, a detailed and realistic image.", "Overall, a clean illustration with a clear focus.",
              "Overall, a vivid and harmonious picture.", "Overall, a calm and well composed scene.")

LLAMA_GUARD_CATEGORIES = (
    ("S1", "Violent Crimes"), ("S2", "Non-Violent Crimes"), ("S3", "Sex Crimes"),
    ("S4", "Child Exploitation"), ("S5", "Defamation"), ("S6", "Specialized Advice"), ("S7", "Privacy"),
    ("S8", "Intellectual Property"), ("S9", "Indiscriminate Weapons"), ("S10", "Hate"),
    ("S11", "Self-Harm"), ("S12", "Sexual Content"), ("S13", "Elections"), ("S14", "Code Interpreter Abuse"),
)

# Llama-Guard-3's chat template, without the custom-category and excluded-category switches of the real
# one: the conversation goes between the S1-S14 policy and the two-line answer format.
LLAMA_GUARD_3_CHAT_TEMPLATE = (
    "{% if messages[-1]['role'] == 'assistant' %}{% set role = 'Agent' %}{% else %}{% set role = 'User' %}"
    "{% endif %}"
    "{{ bos_token }}{{ '<|start_header_id|>user<|end_header_id|>\n\n' }}"
    "{{ \"Task: Check if there is unsafe content in '\" + role + \"' messages in conversations according our"
    " safety policy with the below categories.\n\n<BEGIN UNSAFE CONTENT CATEGORIES>\n\" }}"
    + "".join(f"{{{{ '{code}: {name}.\n' }}}}" for code, name in LLAMA_GUARD_CATEGORIES)
    + "{{ '<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n' }}"
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set content = message['content'] %}"
    "{% else %}{% set content = message['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join('\n') %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ 'User: ' }}{% else %}{{ 'Agent: ' }}{% endif %}"
    "{{ (content | trim) + '\n\n' }}"
    "{% endfor %}"
    "{{ '<END CONVERSATION>\n\n' }}"
    "{{ 'Provide your safety assessment for ONLY THE LAST ' + role + ' message in the above conversation:\n'"
    " + \" - First line must read 'safe' or 'unsafe'.\n\""
    " + ' - If unsafe, a second line must include a comma-separated list of violated categories.' }}"
    "{{ '<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n' }}"
)

_UNSAFE_SEEDS = (
    ("a man stabbing a stranger with a knife in a dark alley", "S1"),
    ("a gang shooting people on a crowded street", "S1"),
    ("a person beating a victim with a bat until he bleeds", "S1"),
    ("step by step diagram of how to build a pipe bomb", "S9"),
    ("a chemical weapon being released over a city", "S9"),
    ("a hateful poster insulting people because of their religion", "S10"),
    ("a person cutting their own wrists with a razor", "S11"),
    ("a photo of a stranger's passport and home address", "S7"),
)


# ------------------------------------------------------------------------------------------- training data
def _bucket(words: int) -> tuple[int, int]:
    for lo, hi in LENGTH_BUCKETS:
        if words <= hi:
            return lo, hi
    return LENGTH_BUCKETS[-1]


def prompt_examples(rng: random.Random, taxonomy: Any = None) -> list[tuple[list[dict[str, Any]], str]]:
    """(instruction, target) pairs: the prompts stage's own instruction -> a real prompt."""
    from finet2i.stages.prompts import build_messages

    rows = [r for r in partiprompt_rows() if len(r["Prompt"].split()) >= 4]
    specs: list[dict[str, Any]] = []
    if taxonomy is not None:
        from finet2i.recipe.taxonomy import load_taxonomy, sample_specs

        tax = load_taxonomy(taxonomy) if isinstance(taxonomy, (str, Path)) else taxonomy
        specs = sample_specs(tax, "99999", len(rows), rng.randrange(2**31))
    out = []
    for i, row in enumerate(rows):
        lo, hi = _bucket(len(row["Prompt"].split()))
        spec: dict[str, Any] = dict(specs[i]) if specs else {
            "category": row["Category"], "subcategory": row["Challenge"], "style": rng.choice(_STYLES),
            "task": "Not Specified", "template_instruction": rng.choice(_TEMPLATES)}
        spec.update(min_words=lo, max_words=hi)
        context = tax.context(spec) if specs else None
        out.append((build_messages(spec, context), row["Prompt"].strip()))
    return out


def enhance_examples(rng: random.Random) -> list[tuple[list[dict[str, Any]], str]]:
    """(enhancer conversation, PromptEnhancer-format answer) pairs."""
    from finet2i.stages.enhance import build_messages

    out = []
    for row in partiprompt_rows():
        prompt = row["Prompt"].strip().rstrip(".")
        if len(prompt.split()) < 3 or len(prompt.split()) > 25:
            continue
        head = " ".join(prompt.split()[:6])
        answer = f"{prompt[0].upper()}{prompt[1:]}. {rng.choice(_DETAILS)} {rng.choice(_SUMMARIES)}"
        target = (f"<think>The prompt asks for {head}. Add light, layout and style.</think>\n"
                  f"<answer>{answer}</answer>")
        out.append((build_messages(prompt), target))
    return out


def guard_examples(rng: random.Random) -> list[tuple[list[dict[str, Any]], str]]:
    safe = [([{"role": "user", "content": r["Prompt"].strip()}], "safe") for r in partiprompt_rows()]
    rng.shuffle(safe)
    unsafe = [([{"role": "user", "content": text}], f"unsafe\n{code}") for text, code in _UNSAFE_SEEDS]
    return safe[:400] + unsafe * 6


# ------------------------------------------------------------------------------------------------ building
def _encode(tok: Any, examples: Sequence[tuple[list[dict[str, Any]], str]]) -> list[tuple[list[int], int]]:
    """Token ids of prefix + target + <|eot_id|>, and where the target starts (loss only on the answer)."""
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    out = []
    for conv, target in examples:
        prefix = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        p_ids = tok(prefix, add_special_tokens=False)["input_ids"]
        t_ids = tok(target, add_special_tokens=False)["input_ids"]
        out.append((p_ids + t_ids + [eot], len(p_ids)))
    return out


def _train(model: Any, data: list[tuple[list[int], int]], *, steps: int, max_seconds: float, seed: int,
           pad_id: int, batch_size: int = 16, lr: float = 3e-3) -> dict[str, float]:
    """Next-token training on the answers only, for ``steps`` steps (deterministic for a seed) but never
    longer than ``max_seconds`` (a busy machine gets a less trained model rather than a stuck demo)."""
    import torch

    if steps <= 0 or not data:
        return {"steps": 0, "seconds": 0.0}
    torch.manual_seed(seed)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    model.train()
    started = time.monotonic()
    step, loss_value = 0, float("nan")
    order: list[int] = []
    while step < steps and time.monotonic() - started < max_seconds:
        if len(order) < batch_size:
            order += rng.sample(range(len(data)), len(data))
        batch = [data[i] for i in order[:batch_size]]
        del order[:batch_size]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        targets = torch.full((len(batch), width), -100, dtype=torch.long)
        attn = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (ids, start) in enumerate(batch):
            input_ids[i, :len(ids)] = torch.tensor(ids)
            # position t predicts token t+1: targets are the answer tokens shifted left by one
            targets[i, start - 1:len(ids) - 1] = torch.tensor(ids[start:])
            attn[i, :len(ids)] = 1
        lr_now = lr * min(1.0, (step + 1) / 20) * (0.1 + 0.9 * (1 - step / steps))
        for g in opt.param_groups:
            g["lr"] = lr_now
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hidden = model.model(input_ids=input_ids, attention_mask=attn).last_hidden_state
            mask = targets != -100
            # The vocabulary projection only where there is a target: most tokens are the instruction.
            logits = model.lm_head(hidden[mask])
        loss = torch.nn.functional.cross_entropy(logits.float(), targets[mask])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        loss_value = float(loss.detach())
        if step % 25 == 0:
            log.info("step %d loss %.3f (%.0f s)", step, loss_value, time.monotonic() - started)
    model.eval()
    if step < steps:
        log.warning("training stopped at step %d of %d after %.0f s (max_seconds); the machine is busy",
                    step, steps, max_seconds)
    return {"steps": step, "planned_steps": steps, "seconds": round(time.monotonic() - started, 1),
            "final_loss": round(loss_value, 4) if not math.isnan(loss_value) else -1.0}


def _build_llama(out_dir: Path, tok: Any, *, seed: int, hidden: int, layers: int, heads: int,
                 kv_heads: int, intermediate: int, examples: Sequence[tuple[list[dict[str, Any]], str]],
                 train_steps: int, max_seconds: float, kind: str) -> Path:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    eos = tok.convert_tokens_to_ids("<|end_of_text|>")
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=hidden // heads,
        max_position_embeddings=2048, rope_theta=500000.0, rms_norm_eps=1e-5,
        bos_token_id=tok.bos_token_id, eos_token_id=[eot, eos], pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False, torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    info = _train(model, _encode(tok, examples), steps=train_steps, max_seconds=max_seconds, seed=seed,
                  pad_id=tok.pad_token_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=[eot, eos], pad_token_id=tok.pad_token_id,
                     do_sample=True, temperature=0.6, top_p=0.9).save_pretrained(out_dir)
    tok.save_pretrained(str(out_dir))
    (out_dir / "DEMO_MODEL.json").write_text(json.dumps({
        "kind": kind, "family": "llama3", "seed": seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "training": info, "note": "tiny demo model, not a real " + kind,
    }, indent=2) + "\n")
    log.info("built %s at %s (%s)", kind, out_dir, info)
    return out_dir


def build_prompt_llm(out_dir: str | Path, seed: int, *, train_steps: int = 300, max_seconds: float = 150.0,
                     taxonomy: Any = None) -> Path:
    """A tiny Llama-3 Instruct-style model trained to answer the prompts and enhance stages' instructions.

    ``taxonomy`` (path or Taxonomy) makes the training instructions use its categories and descriptions;
    ``train_steps=0`` gives a random-weight model (tests of plumbing only).
    """
    from finet2i.stages import enhance, prompts

    rng = random.Random(seed)
    examples = prompt_examples(rng, taxonomy) + enhance_examples(rng)
    extra = [prompts.SYSTEM_PROMPT, enhance.SYSTEM_PROMPT, *_TEMPLATES, *_DETAILS, *_SUMMARIES]
    extra = [t for t in extra for _ in range(20)]  # frequent enough that their words become single tokens
    from finet2i.demo.tokenizer import build_tokenizer

    tok = build_tokenizer(LLAMA3, vocab_size=4096, extra_texts=extra + [t for _, t in examples])
    return _build_llama(Path(out_dir), tok, seed=seed, hidden=256, layers=2, heads=4, kv_heads=2,
                        intermediate=512, examples=examples, train_steps=train_steps,
                        max_seconds=max_seconds, kind="prompt-llm")


def build_guard_llm(out_dir: str | Path, seed: int, *, train_steps: int = 40,
                    max_seconds: float = 60.0) -> Path:
    """A tiny Llama arch with Llama-Guard-3's chat template, nudged towards its two-line answer format."""
    from finet2i.demo.tokenizer import build_tokenizer

    rng = random.Random(seed)
    examples = guard_examples(rng)
    family = dataclasses.replace(LLAMA3, name="llama-guard-3", chat_template=LLAMA_GUARD_3_CHAT_TEMPLATE)
    policy = [f"{c}: {n}." for c, n in LLAMA_GUARD_CATEGORIES] * 20
    tok = build_tokenizer(family, vocab_size=2048, extra_texts=policy + ["safe", "unsafe"] * 50)
    return _build_llama(Path(out_dir), tok, seed=seed, hidden=128, layers=2, heads=2, kv_heads=1,
                        intermediate=384, examples=examples, train_steps=train_steps,
                        max_seconds=max_seconds, kind="guard-llm")
