"""The models finet2i knows about beyond what a config says, as data: which hub repositories are gated, and
where the single-file models that are not on the hub are published (URL, license, home page, and which check
``finet2i fetch-models`` runs on a downloaded copy).

Data only (standard library): the model spec reads it for its "not found" advice, preflight for its rows, and
the fetch command for what to download; none of them needs the others.
"""

from __future__ import annotations

from dataclasses import dataclass

# Hub ids of the shipped production config whose repositories are gated (accept a license on the model's page
# while logged in, then download with a token of that account). The dry run asks the hub when it can; this list
# is what it says offline.
GATED_IDS = frozenset({
    "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-Guard-3-8B",
    "black-forest-labs/FLUX.2-dev",
})


@dataclass(frozen=True)
class FileSource:
    """Where a model that is a single file (not on the hub) is published, and under which license."""

    url: str
    license: str
    license_url: str
    home: str
    # The check fetch-models runs on a downloaded copy (finet2i.models.fetch.CHECKS), and its argument: the
    # embedding width a V2.5 head must take (None: whatever the file says).
    check: str | None = None
    width: int | None = None


AESTHETIC_HEAD = FileSource(
    # The file the upstream package itself downloads (its `URL`), kept in the repository's models/ folder.
    url="https://github.com/discus0434/aesthetic-predictor-v2-5/raw/main/models/aesthetic_predictor_v2_5.pth",
    license="AGPL-3.0",
    license_url="https://github.com/discus0434/aesthetic-predictor-v2-5/blob/main/LICENSE",
    home="https://github.com/discus0434/aesthetic-predictor-v2-5",
    check="aesthetic_head",
    width=1152,  # google/siglip-so400m-patch14-384's pooled output
)

# Config keys (under models:) of files finet2i knows how to get when their path is missing.
KNOWN_FILES: dict[str, FileSource] = {"aesthetic_head": AESTHETIC_HEAD}


# Hub repositories that hold much more than the workflow loads: fetch-models downloads only these files
# (``snapshot_download(allow_patterns=...)``). stabilityai/stable-diffusion-xl-base-1.0 also ships two single-file
# checkpoints, fp16 variants, ONNX and OpenVINO exports (tens of GB); StableDiffusionXLPipeline.from_pretrained
# reads the diffusers folders below. openai/clip-vit-large-patch14 ships its weights in four formats.
HUB_FILES: dict[str, tuple[str, ...]] = {
    "stabilityai/stable-diffusion-xl-base-1.0": (
        "model_index.json", "scheduler/*.json", "tokenizer/*", "tokenizer_2/*",
        "text_encoder/config.json", "text_encoder/model.safetensors",
        "text_encoder_2/config.json", "text_encoder_2/model.safetensors",
        "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
    ),
    "openai/clip-vit-large-patch14": ("*.json", "*.txt", "model.safetensors"),
}
