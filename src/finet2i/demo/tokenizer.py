"""Small byte-level BPE tokenizers with a real model family's special tokens and chat template, built offline.

No tokenizer can be downloaded here, so a demo model gets one trained in seconds on PartiPrompts (plus any
text the caller adds, e.g. the instructions a stage sends), wrapped in ``PreTrainedTokenizerFast`` with the
family's special tokens, BOS/EOS/PAD roles and chat template, so that ``apply_chat_template``, vLLM's
``LLM.chat`` and the real processors treat it like the family's own tokenizer.

Usage::

    tok = build_tokenizer(LLAMA3, out_dir=path)            # Llama-3 specials + chat template
    tok = build_tokenizer(QWEN3_VL, extra_texts=[...])      # <|im_start|>, <|image_pad|>, ...
    tok = build_tokenizer(dataclasses.replace(LLAMA3, chat_template=MY_TEMPLATE), vocab_size=1024)
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenizerFamily:
    """What makes a tokenizer belong to a model family, apart from its learned vocabulary."""

    name: str
    special_tokens: tuple[str, ...]  # appended after the learned vocabulary, in this order (ids follow it)
    eos_token: str
    chat_template: str
    bos_token: str | None = None
    pad_token: str | None = None
    add_bos: bool = False  # Llama-3 prepends BOS on every encode; Qwen never does
    model_max_length: int = 4096
    extra: dict[str, Any] = field(default_factory=dict)  # more PreTrainedTokenizerFast kwargs


# Llama-3.x Instruct, without the tool-calling branches: system/user/assistant turns with header tokens.
# The real template also starts with BOS and trims message content the same way.
LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set content = message['content'] %}"
    "{% else %}{% set content = message['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join('\n') %}{% endif %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + (content | trim)"
    " + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

LLAMA3_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
)

LLAMA3 = TokenizerFamily(
    name="llama3",
    special_tokens=LLAMA3_SPECIAL_TOKENS,
    bos_token="<|begin_of_text|>",
    eos_token="<|eot_id|>",  # Instruct models end a turn with it (generation_config adds <|end_of_text|>)
    pad_token="<|finetune_right_pad_id|>",
    add_bos=True,
    chat_template=LLAMA3_CHAT_TEMPLATE,
)

# Qwen3-VL's special tokens in the real order (<|endoftext|> first, then the chat, vision and tool tokens).
QWEN3_VL_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)

# ChatML with Qwen-VL's image placeholder: every image part becomes
# <|vision_start|><|image_pad|><|vision_end|>, which the Qwen3-VL processor (and vLLM) expand to
# the image's patch count. Text-only turns are plain ChatML.
QWEN3_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or part['type'] == 'image_url' or part['type'] == 'image_pil'"
    " or 'image' in part %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

QWEN3_VL = TokenizerFamily(
    name="qwen3-vl",
    special_tokens=QWEN3_VL_SPECIAL_TOKENS,
    eos_token="<|im_end|>",
    pad_token="<|endoftext|>",
    chat_template=QWEN3_VL_CHAT_TEMPLATE,
    extra={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
           "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"},
)


def partiprompts(limit: int | None = None) -> list[str]:
    """The PartiPrompts prompt texts shipped in ``finet2i/data`` (Apache-2.0)."""
    return [row["Prompt"] for row in partiprompt_rows(limit)]


def partiprompt_rows(limit: int | None = None) -> list[dict[str, str]]:
    path = resources.files("finet2i") / "data" / "PartiPrompts.tsv"
    with path.open(encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if (r.get("Prompt") or "").strip()]
    return rows[:limit] if limit else rows


def train_bpe(texts: Iterable[str], *, vocab_size: int = 2048, min_frequency: int = 2) -> Any:
    """A byte-level BPE (GPT-2/Llama-3 style: any byte string round-trips) learned from ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer=trainer)
    return tok


def build_tokenizer(family: TokenizerFamily, *, vocab_size: int = 2048, extra_texts: Sequence[str] = (),
                    out_dir: str | os.PathLike[str] | None = None) -> Any:
    """Train a BPE on PartiPrompts + ``extra_texts`` and dress it as ``family``'s tokenizer.

    Returns a ``transformers.PreTrainedTokenizerFast``; with ``out_dir`` it is also saved there
    (tokenizer.json, tokenizer_config.json with the chat template, special_tokens_map.json).
    Deterministic: the same texts and vocab size give the same vocabulary.
    """
    from tokenizers import AddedToken, processors
    from transformers import PreTrainedTokenizerFast

    texts = partiprompts() + list(extra_texts)
    bpe = train_bpe(texts, vocab_size=vocab_size)
    # Specials after the learned vocabulary, as in the real families (Llama-3: 128000+, Qwen: 151643+).
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in family.special_tokens])
    for role in (family.bos_token, family.eos_token, family.pad_token):
        if role is not None and bpe.token_to_id(role) is None:
            raise ValueError(f"tokenizer family {family.name}: {role!r} is not among its special_tokens")
    if family.add_bos and family.bos_token:
        bos_id = bpe.token_to_id(family.bos_token)
        bpe.post_processor = processors.TemplateProcessing(
            single=f"{family.bos_token} $A", pair=f"{family.bos_token} $A {family.bos_token} $B",
            special_tokens=[(family.bos_token, bos_id)])

    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=family.bos_token,
        eos_token=family.eos_token,
        pad_token=family.pad_token,
        model_max_length=family.model_max_length,
        clean_up_tokenization_spaces=False,
        **family.extra,
    )
    tok.chat_template = family.chat_template
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(str(out_dir))
        log.info("saved %s tokenizer (%d tokens) to %s", family.name, len(tok), out_dir)
    return tok
