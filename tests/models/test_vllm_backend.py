"""The vLLM chat backend, the offline family tokenizers and the tiny Llama demo models."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from finet2i.models.backends import ChatLLM, Constraint, Sampling, VisionLLM
from finet2i.models.backends.vllm_llm import (
    chat_each,
    chat_seeded,
    cpu_environment,
    structured_outputs,
    to_vllm_messages,
)
from finet2i.models.spec import ModelNotAvailable, ModelSpec


# ------------------------------------------------------------------------------------------- conversions
def test_image_parts_become_vllm_pil_parts() -> None:
    from PIL import Image

    img = Image.new("RGB", (8, 8), (255, 0, 0))
    conv = [{"role": "system", "content": "judge"},
            {"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": "ok?"}]}]
    out = to_vllm_messages(conv)
    assert out[0] == {"role": "system", "content": "judge"}
    assert out[1]["content"][0] == {"type": "image_pil", "image_pil": img}
    assert out[1]["content"][1] == {"type": "text", "text": "ok?"}


def test_image_path_is_loaded_and_bad_parts_are_rejected(tmp_path: Path) -> None:
    from PIL import Image

    p = tmp_path / "x.png"
    Image.new("RGB", (4, 4)).save(p)
    out = to_vllm_messages([{"role": "user", "content": [{"type": "image", "image": p}]}])
    assert out[0]["content"][0]["image_pil"].size == (4, 4)
    with pytest.raises(ValueError, match="audio"):
        to_vllm_messages([{"role": "user", "content": [{"type": "audio", "audio": b""}]}])
    with pytest.raises(ValueError, match="PIL"):
        to_vllm_messages([{"role": "user", "content": [{"type": "image"}]}])


def test_constraints_map_to_structured_outputs() -> None:
    assert structured_outputs(None) is None
    assert structured_outputs(Constraint(choice=["yes", "no"])).choice == ["yes", "no"]
    assert structured_outputs(Constraint(regex="a+")).regex == "a+"
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    assert structured_outputs(Constraint(json_schema=schema)).json == schema
    with pytest.raises(ValueError, match="exactly one"):
        structured_outputs(Constraint())
    with pytest.raises(ValueError, match="exactly one"):
        structured_outputs(Constraint(choice=["a"], regex="a"))


def test_cpu_environment_keeps_what_the_user_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")
    monkeypatch.delenv("VLLM_CACHE_ROOT", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "mine"))
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    done = cpu_environment(tmp_path / "scratch")
    assert done == {"VLLM_CACHE_ROOT": str(tmp_path / "scratch" / "cache"), "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    assert (tmp_path / "scratch" / "cache").is_dir()
    import os

    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "3" and os.environ["TMPDIR"] == str(tmp_path / "mine")


def test_missing_model_names_the_config_key(tmp_path: Path) -> None:
    from finet2i.models.backends.vllm_llm import VLLMChat

    with pytest.raises(ModelNotAvailable, match="models.guard"):
        VLLMChat(ModelSpec(key="models.guard", path=str(tmp_path / "nope")))


class _OneSeedAtATime:
    """A ChatLLM without a ``seeds`` keyword (e.g. another backend): chat_seeded must call it per seed."""

    model_name = "other"

    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []

    def chat(self, conversations: list[Any], sampling: Sampling, constraint: Any = None) -> list[str]:
        self.calls.append((len(conversations), sampling.seed))
        return [f"seed={sampling.seed}" for _ in conversations]


def test_chat_seeded_falls_back_to_one_call_per_seed() -> None:
    llm = _OneSeedAtATime()
    out = chat_seeded(llm, [[{"role": "user", "content": "a"}]] * 3, Sampling(), None, [5, 6, 5])
    assert out == ["seed=5", "seed=6", "seed=5"]
    assert llm.calls == [(1, 5), (1, 6), (1, 5)]
    with pytest.raises(ValueError, match="2 seeds for 3"):
        chat_seeded(llm, [[]] * 3, Sampling(), None, [1, 2])


def test_chat_each_falls_back_to_one_call_per_sampling_in_order() -> None:
    llm = _OneSeedAtATime()  # no `samplings=` keyword either
    convs = [[{"role": "user", "content": c}] for c in "abcd"]
    short, long = Sampling(max_tokens=8, seed=1), Sampling(max_tokens=64, seed=2)
    assert chat_each(llm, convs, [short, long, short, long]) == ["seed=1", "seed=2", "seed=1", "seed=2"]
    assert llm.calls == [(2, 1), (2, 2)]
    assert chat_each(llm, [], []) == []
    with pytest.raises(ValueError, match="1 samplings for 2"):
        chat_each(llm, convs[:2], [short])


# --------------------------------------------------------------------------------------------- tokenizers
def test_llama3_tokenizer_has_the_family_specials_and_template() -> None:
    from finet2i.demo.tokenizer import LLAMA3, build_tokenizer

    tok = build_tokenizer(LLAMA3, vocab_size=1024)
    text = tok.apply_chat_template([{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "a red fox"}],
                                   tokenize=False, add_generation_prompt=True)
    assert text == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                    "<|start_header_id|>user<|end_header_id|>\n\na red fox<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")
    ids = tok("a red fox")["input_ids"]
    assert ids[0] == tok.bos_token_id  # Llama-3 prepends BOS
    assert tok.decode(ids, skip_special_tokens=True) == "a red fox"
    for special in ("<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"):
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1
    assert tok.eos_token == "<|eot_id|>"
    assert tok.decode(tok("Ünïcode 😀 ok", add_special_tokens=False)["input_ids"]) == "Ünïcode 😀 ok"


def test_qwen3_vl_tokenizer_places_image_pads() -> None:
    from finet2i.demo.tokenizer import QWEN3_VL, build_tokenizer

    tok = build_tokenizer(QWEN3_VL, vocab_size=1024)
    text = tok.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what?"}]}],
        tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>what?<|im_end|>\n"
                    "<|im_start|>assistant\n")
    assert tok.bos_token is None
    assert tok("a cat")["input_ids"] == tok("a cat", add_special_tokens=False)["input_ids"]  # no BOS added
    assert len(tok("<|image_pad|>")["input_ids"]) == 1


# ------------------------------------------------------------------------------------------- demo models
@pytest.mark.slow
def test_demo_models_load_with_their_templates(tiny_prompt_llm: Path, tiny_guard_llm: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    assert AutoConfig.from_pretrained(tiny_prompt_llm).model_type == "llama"
    guard_tok = AutoTokenizer.from_pretrained(tiny_guard_llm)
    text = guard_tok.apply_chat_template([{"role": "user", "content": "a cat"}], tokenize=False,
                                         add_generation_prompt=True)
    assert "S1: Violent Crimes." in text and "S14: Code Interpreter Abuse." in text
    assert "User: a cat\n\n<END CONVERSATION>" in text
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    info = json.loads((tiny_prompt_llm / "DEMO_MODEL.json").read_text())
    assert info["training"]["steps"] > 0


# ----------------------------------------------------------------------------------------------- engine
@pytest.mark.vllm
@pytest.mark.slow
def test_engine_is_a_chat_and_vision_llm(prompt_engine: Any) -> None:
    assert isinstance(prompt_engine, ChatLLM) and isinstance(prompt_engine, VisionLLM)
    assert prompt_engine.model_name == "prompt-llm"
    assert prompt_engine.chat([], Sampling()) == []


@pytest.mark.vllm
@pytest.mark.slow
def test_per_conversation_seeds_reproduce_whatever_the_batch(prompt_engine: Any) -> None:
    conv = [{"role": "user", "content": "Write one prompt for a text-to-image model. Style: Anime"}]
    sampling = Sampling(temperature=1.4, top_p=0.8, max_tokens=24)
    batch = prompt_engine.chat([conv, conv, conv], sampling, seeds=[11, 12, 11])
    assert batch[0] == batch[2]
    alone = prompt_engine.chat([conv], sampling, seeds=[11])
    assert alone[0] == batch[0]
    assert len(set(prompt_engine.chat([conv] * 4, sampling, seeds=[1, 2, 3, 4]))) > 1


@pytest.mark.vllm
@pytest.mark.slow
def test_per_conversation_samplings_in_one_batch(prompt_engine: Any) -> None:
    """Two answer lengths in one call (the captioner's short and long prompts): each keeps its own budget."""
    conv = [{"role": "user", "content": "Describe a red fox in the snow."}]
    short, long = Sampling(temperature=0.0, max_tokens=2), Sampling(temperature=0.0, max_tokens=24)
    both = prompt_engine.chat([conv, conv], short, samplings=[short, long])
    assert both == [prompt_engine.chat([conv], short)[0], prompt_engine.chat([conv], long)[0]]
    assert chat_each(prompt_engine, [conv, conv], [long, short]) == both[::-1]
    assert both[1].startswith(both[0])  # greedy: the short answer is the long one cut at its budget
    with pytest.raises(ValueError, match="1 samplings for 2"):
        prompt_engine.chat([conv, conv], short, samplings=[short])


@pytest.mark.vllm
@pytest.mark.slow
def test_structured_outputs_hold_on_a_random_model(prompt_engine: Any) -> None:
    conv = [[{"role": "user", "content": "Is this prompt safe?"}]] * 3
    sampling = Sampling(temperature=1.0, max_tokens=40, seed=3)
    answers = prompt_engine.chat(conv, sampling, Constraint(choice=["yes", "no"]))
    assert all(a in ("yes", "no") for a in answers)
    regex = r"(safe|unsafe\nS([1-9]|1[0-4]))"
    assert all(re.fullmatch(regex, a) for a in prompt_engine.chat(conv, sampling, Constraint(regex=regex)))
    schema = {"type": "object", "properties": {"match": {"type": "boolean"}}, "required": ["match"],
              "additionalProperties": False}
    greedy = Sampling(temperature=0.0, max_tokens=60)
    for a in prompt_engine.chat(conv, greedy, Constraint(json_schema=schema)):
        assert isinstance(json.loads(a)["match"], bool)


@pytest.mark.vllm
@pytest.mark.slow
def test_text_engine_refuses_images(prompt_engine: Any) -> None:
    from PIL import Image

    conv = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (8, 8))},
                                         {"type": "text", "text": "describe"}]}]
    with pytest.raises(ValueError, match="limit_images=0"):
        prompt_engine.chat([conv], Sampling(max_tokens=4))


# ---------------------------------------------------------------------------------------- prefix caching
def test_prefix_order_puts_shared_system_prompts_together() -> None:
    from finet2i.models.backends.vllm_llm import prefix_order

    def conv(system: str, user: str) -> list[dict[str, Any]]:
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    convs = [conv("B", "x"), conv("A", "y"), conv("B", "a"), conv("A", "y"),
             [{"role": "user", "content": [{"type": "image", "image": None}, {"type": "text", "text": "q"}]}]]
    order = prefix_order(convs)
    assert [convs[i][0]["content"] for i in order[:4]] == ["A", "A", "B", "B"]
    assert order[:2] == [1, 3]  # ties keep the caller's order
    assert prefix_order([]) == []


@pytest.mark.vllm
@pytest.mark.slow
def test_prefix_cache_saves_the_shared_system_prompts_prefill(prompt_engine: Any) -> None:
    """The prompts stage's own conversations, two system prompts interleaved: after the first request of each,
    vLLM reads the shared blocks from its cache (it reports them per request), and the answers come back in
    the caller's order whatever order they were scheduled in."""
    from finet2i.stages.prompts import build_messages

    structure = ("Start with the main subject and what it does, then its setting, then the light and the "
                 "camera or medium, then the mood, in one flowing sentence without lists. ")
    specs = [{"category": "Animals", "subcategory": "Mammals", "style": s, "task": "Not Specified",
              "length_target": 20, "template_instruction": t}
             for s, t in [("Anime", structure), ("Photo", structure * 2)] * 4]
    convs = [build_messages(s) for s in specs]
    block = prompt_engine.llm.llm_engine.vllm_config.cache_config.block_size
    before = prompt_engine.prefix_cache_stats()
    sampling = Sampling(temperature=1.0, max_tokens=6)
    seeds = list(range(len(convs)))
    answers = prompt_engine.chat(convs, sampling, seeds=seeds)
    after = prompt_engine.prefix_cache_stats()
    saved = after["cached_tokens"] - before["cached_tokens"]
    asked = after["prompt_tokens"] - before["prompt_tokens"]
    assert asked > 0 and saved > 0
    # Each system prompt is longer than one KV block (128 tokens on CPU, 16 on GPUs): every request after the
    # first of its system prompt reuses at least one whole block.
    assert saved >= (len(convs) - 2) * block, (saved, asked, block)
    assert prompt_engine.chat(convs[::-1], sampling, seeds=seeds[::-1]) == answers[::-1]
