"""Preflight: each GPU stage's model against the GPUs of its partition (finet2i.preflight.gpu_memory), its size
from the model's config or published sizes (finet2i.models.memory): nothing is loaded."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from support.workflow import ROOT

from finet2i.models import memory
from finet2i.models.spec import ModelSpec
from finet2i.preflight.gpu_memory import _check_gpu_memory, gpu_memory, stage_need
from finet2i.preflight.plan import RuleInfo
from finet2i.preflight.profile import Request
from finet2i.preflight.report import GO, NOGO, WARN, Report
from finet2i.preflight.slurm import Cluster, Node, Partition, gpu_gres
from finet2i.workflow.config import validate_config

PRODUCTION = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_gres_type_names_and_their_memory() -> None:
    assert gpu_gres("gpu:a100:4(S:0-1)") == (4, (("a100", 4),)) and gpu_gres("gpu:2") == (2, ())
    assert gpu_gres("gpu:a100:2,gpu:v100:1") == (3, (("a100", 2), ("v100", 1)))
    assert gpu_memory("h100") == 80 and gpu_memory("a100") == 40 and gpu_memory("a100_80g") == 80
    assert gpu_memory("nvidia_h100_80gb_hbm3") == 80 and gpu_memory("nvidia_a100-sxm4-40gb") == 40
    assert gpu_memory("rtx_a6000") == 48 and gpu_memory("h200") == 141 and gpu_memory("fancy_gpu") is None


def test_parameters_come_from_the_config_fields(tmp_path: Path) -> None:
    """Llama-3.1-8B's config.json fields give its 8.03B parameters and 128 KiB of KV cache per token."""
    llama = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 14336,
             "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
             "tie_word_embeddings": False, "max_position_embeddings": 131072}
    (tmp_path / "config.json").write_text(json.dumps(llama))
    w = memory.from_folder(tmp_path)
    assert w.params == pytest.approx(8.03e9, rel=0.002) and w.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2
    assert "config.json's fields" in w.how
    need = memory.vllm_need(w, "llama", max_model_len=4096)
    assert need.parts["weights"] == pytest.approx(8.03e9 * 2 / 2**30, rel=0.002)
    assert need.parts["KV of 4096 tokens"] == pytest.approx(0.5)


def test_a_model_not_on_this_machine_takes_its_published_size() -> None:
    w = memory.weights_of(ModelSpec(key="models.flux2", id="black-forest-labs/FLUX.2-dev", revision="main"))
    assert w.components == {"transformer": 32e9, "text_encoder": 24e9, "vae": 0.084e9}
    assert "published:" in w.how and "flux-2" in w.how


def _cluster(gpu_types: tuple[str, ...], gres_gpus: int = 4) -> Cluster:
    node = Node("g1", cpus=64, mem_mb=512_000, gpus=gres_gpus, state="IDLE", partitions=("gpu",),
                gpu_types=tuple((t, gres_gpus) for t in gpu_types))
    return Cluster(partitions={"gpu": Partition("gpu", True, "UP", False, None, (node,), None, (), None)})


def _check(config: dict, cluster: Cluster, rules: tuple[str, ...] = ("generate", "guard_batch")) -> Report:
    infos = {r: RuleInfo(r, 4, {"gpu": 1}, (), False, ("shard",)) for r in rules}
    requests = [(infos[r], Request(r, 1, "gpu", "acct", 4, 32000, 1, 60)) for r in rules]
    report = Report()
    _check_gpu_memory(infos, requests, cluster, None, config, ROOT, report)
    return report


@pytest.fixture(scope="module")
def production() -> dict:
    return validate_config(copy.deepcopy(PRODUCTION), base_dir=ROOT, check_models=False)


def test_flux2_without_offload_on_an_80gb_card_is_a_no_go_that_says_what_to_do(production) -> None:
    config = copy.deepcopy(production)
    config["generate"]["generators"]["flux2"]["cpu_offload"] = False
    report = _check(config, _cluster(("h100",)))
    [nogo] = [c for c in report.checks if c.status == NOGO]
    assert "rule generate (stage generate)" in nogo.detail and "FLUX.2-dev (flux2)" in nogo.detail
    assert "partition gpu's h100 GPUs (80 GiB each" in nogo.detail and "GiB" in nogo.detail
    assert "generate.generators.flux2.cpu_offload: true" in nogo.detail and "FLUX.2-dev-bnb-4bit" in nogo.detail
    need = stage_need("generate", config, ROOT)
    assert 100 < need.gib < 120  # 32B + 24B in bf16, the VAE, the largest call's activations, the scorer
    # The guard fits (8B in bf16 with its KV cache), and the shipped config (offloaded) fits too.
    assert any(c.status == GO and "rule guard_batch (stage guard)" in c.detail for c in report.checks)
    shipped = _check(production, _cluster(("h100",)))
    assert not [c for c in shipped.checks if c.status == NOGO]
    # An H200 holds FLUX.2 whole.
    assert not [c for c in _check(config, _cluster(("h200",))).checks if c.status == NOGO]


def test_a_gpu_without_a_type_is_a_warning_naming_the_nodes(production) -> None:
    """The local test cluster's fake GPUs are `gpu:2` without a type: what fits cannot be told."""
    report = _check(production, _cluster((), gres_gpus=2), rules=("guard_batch",))
    [warn] = report.checks
    assert warn.status == WARN and "nodes g1 declare GPUs without a type (GRES gpu:N)" in warn.detail
    assert "Llama-Guard-3-8B needs ~" in warn.detail
    unknown = _check(production, _cluster(("quantum9000",)), rules=("guard_batch",))
    assert unknown.checks[0].status == WARN and "quantum9000 not in preflight's table" in unknown.checks[0].detail


def test_the_demo_models_are_sized_from_their_files() -> None:
    from support.workflow import demo_resources

    from finet2i.demo.build import build_all

    build_all(demo_resources(), seed=0)  # a fresh clone has none yet; built once, shared with the demo's tests
    demo = validate_config(yaml.safe_load((ROOT / "config" / "demo.yaml").read_text()), base_dir=ROOT,
                           check_models=False)
    for stage in ("prompts", "guard", "attributes", "generate", "pair_filter", "curated_score", "embed"):
        need = stage_need(stage, demo, ROOT)
        assert need is not None and need.gib < 3, (stage, need)  # tiny models: under the smallest GPU
