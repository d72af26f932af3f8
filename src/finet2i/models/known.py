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
    # Its size as far as finet2i knows it (fetch-models caps a download at this plus a margin; None: --max-bytes).
    expected_bytes: int | None = None


AESTHETIC_HEAD = FileSource(
    # The file the upstream package itself downloads (its `URL`), kept in the repository's models/ folder.
    url="https://github.com/discus0434/aesthetic-predictor-v2-5/raw/main/models/aesthetic_predictor_v2_5.pth",
    license="AGPL-3.0",
    license_url="https://github.com/discus0434/aesthetic-predictor-v2-5/blob/main/LICENSE",
    home="https://github.com/discus0434/aesthetic-predictor-v2-5",
    check="aesthetic_head",
    width=1152,  # google/siglip-so400m-patch14-384's pooled output
    # From its architecture (finet2i.models.backends.aesthetic: 1152 -> 1024 -> 128 -> 64 -> 16 -> 1): 1,321,185
    # float32 parameters, 5,284,740 bytes of tensors; a state dict holds nothing else (checked strictly on load).
    # The published file's exact size was not read by the project: the cap leaves a margin (SIZE_MARGIN).
    expected_bytes=1_321_185 * 4,
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

# ---------------------------------------------------------------------------------------------------------------
# The terms that travel with each model's outputs (the dataset card states them, so that a group that fine-tunes
# on the dataset knows what it accepts). Quoted from each license as published, with a link; where the project's
# research could not read a license first-hand, the entry says so (docs/real-sources.md, "Model terms"). These are
# summaries for the card, not legal advice: the license text governs.


@dataclass(frozen=True)
class OutputTerms:
    license: str
    url: str
    on_outputs: str  # what the license says about using or distributing the model's outputs (quoted)
    verified: bool = True  # False: the license was not read first-hand (the entry says what is uncertain)


_LLAMA_31 = OutputTerms(
    license="Llama 3.1 Community License",
    url="https://github.com/meta-llama/llama-models/blob/main/models/llama3_1/LICENSE",
    on_outputs=("Section 1.b.i: \"If you use the Llama Materials or any outputs or results of the Llama Materials "
                "to create, train, fine tune, or otherwise improve an AI model, which is distributed or made "
                "available, you shall also include \"Llama\" at the beginning of any such AI model name.\" "
                "Distributing Llama Materials also needs \"Built with Llama\" and a copy of the Agreement; the "
                "Acceptable Use Policy (https://llama.meta.com/llama3_1/use-policy) applies."),
)
_APACHE_NO_OUTPUT_TERMS = "Apache-2.0 (Hugging Face metadata); no terms on outputs found"

OUTPUT_TERMS: dict[str, OutputTerms] = {
    "meta-llama/Llama-3.1-8B-Instruct": _LLAMA_31,
    "meta-llama/Llama-Guard-3-8B": OutputTerms(
        license=_LLAMA_31.license, url=_LLAMA_31.url,
        on_outputs=_LLAMA_31.on_outputs + " Whether using its safety labels to filter data counts as using "
                   "\"outputs or results\" to create a model is not settled by the text.",
    ),
    "black-forest-labs/FLUX.2-dev": OutputTerms(
        license="FLUX [dev] Non-Commercial License v2.0",
        url="https://github.com/black-forest-labs/flux2/blob/main/model_licenses/LICENSE-FLUX-DEV",
        on_outputs=("Section 2.d: \"You may use Output for any purpose (including for commercial purposes), except "
                    "as expressly prohibited herein. You may not use the Output to train, fine-tune, or distill a "
                    "model that is competitive with a FLUX [dev] Model.\" Section 1.c: use \"to train, fine tune, "
                    "or distill other models for commercial use\" is not a Non-Commercial Purpose. Section 4.a "
                    "forbids distributing \"any data produced by the FLUX [dev] Model\" \"for any commercial or "
                    "production purposes\" (read 2.d and 4.a together, with counsel). Section 2.e: content filters "
                    "or a review of outputs before distribution, and disclosure that they were AI-generated where "
                    "the law requires it."),
    ),
    "PromptEnhancer/PromptEnhancer-7B": OutputTerms(
        license="Tencent Hunyuan Community License (the GitHub repository's LICENSE; the Hugging Face weights' "
                "license was not verified)",
        url="https://github.com/Hunyuan-PromptEnhancer/PromptEnhancer/blob/main/LICENSE",
        on_outputs=("Section 5(b): \"You must not use the Tencent Hunyuan Works or any Output or results of the "
                    "Tencent Hunyuan Works to improve any other AI model (other than Tencent Hunyuan or Model "
                    "Derivatives thereof).\" Section 5(c): no use, distribution or display of Output outside the "
                    "Territory; the license \"DOES NOT APPLY IN THE EUROPEAN UNION, UNITED KINGDOM AND SOUTH "
                    "KOREA\"."),
        verified=False,
    ),
    "stabilityai/stable-diffusion-xl-base-1.0": OutputTerms(
        license="CreativeML Open RAIL++-M",
        url="https://github.com/Stability-AI/generative-models/blob/main/model_licenses/LICENSE-SDXL1.0",
        on_outputs=("\"Derivatives of the Model\" include models trained on \"synthetic data by the Model\"; "
                    "derivatives \"will always have to include - at minimum - the same use-based restrictions\" "
                    "(Attachment A), and \"No use of the output can contravene any provision as stated in the "
                    "License.\""),
    ),
    "Tongyi-MAI/Z-Image-Turbo": OutputTerms(_APACHE_NO_OUTPUT_TERMS, "https://huggingface.co/Tongyi-MAI/Z-Image-Turbo",
                                            "none found"),
    "Qwen/Qwen3-VL-8B-Instruct": OutputTerms(_APACHE_NO_OUTPUT_TERMS,
                                             "https://huggingface.co/Qwen/Qwen3-VL-8B-Instruct", "none found"),
    "Qwen/Qwen3-VL-8B-Thinking": OutputTerms(
        "Apache-2.0 according to a third-party index (not seen on the model card)",
        "https://huggingface.co/Qwen/Qwen3-VL-8B-Thinking", "none found", verified=False),
    "Qwen/Qwen2.5-VL-7B-Instruct": OutputTerms(_APACHE_NO_OUTPUT_TERMS,
                                               "https://huggingface.co/Qwen/Qwen2.5-VL-7B-Instruct", "none found"),
    "Ertugrul/Qwen2.5-VL-7B-Captioner-Relaxed": OutputTerms(
        "not found by the project's research (its Qwen2-VL predecessor is Apache-2.0): read the model card",
        "https://huggingface.co/Ertugrul/Qwen2.5-VL-7B-Captioner-Relaxed", "unknown", verified=False),
    "sentence-transformers/all-MiniLM-L6-v2": OutputTerms(
        _APACHE_NO_OUTPUT_TERMS, "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2", "none found"),
    "google/siglip-so400m-patch14-384": OutputTerms(
        _APACHE_NO_OUTPUT_TERMS, "https://huggingface.co/google/siglip-so400m-patch14-384", "none found"),
}
FILE_OUTPUT_TERMS: dict[str, OutputTerms] = {
    "aesthetic_head": OutputTerms(
        license="AGPL-3.0 (the code and weights)", url=AESTHETIC_HEAD.license_url,
        on_outputs="none on the scores; the AGPL binds distributing the head or serving it over a network"),
}

# What each model key's outputs became in the dataset (the card's "what it wrote" column).
MODEL_ROLES: dict[str, str] = {
    "prompt_generator": "wrote the synthetic prompts (json prompt)",
    "enhancer": "rewrote prompts (json enhanced_prompt of the synthetic subsets)",
    "z_image": "rendered synthetic images (jpg)",
    "flux2": "rendered synthetic images (jpg)",
    "captioner": "wrote the curated photos' prompts (json prompt and enhanced_prompt)",
    "guard": "labelled prompts safe or unsafe (filtering; labels not shipped)",
    "verifier": "checked prompt attributes (filtering)",
    "judge": "judged image-prompt pairs (filtering)",
    "embedder": "embedded prompts for deduplication (filtering)",
    "aesthetic_encoder": "scored aesthetics (json aesthetic_predictor_v_2_5_score)",
    "aesthetic_head": "scored aesthetics (json aesthetic_predictor_v_2_5_score)",
}
