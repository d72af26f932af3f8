"""The checks of one sample: its key (a lowercase uuid, once per subset folder), its members (jpg, json, txt, in
that order), its json (the release's 15 keys, their types and values), its txt (the prompt the image was
rendered with), its jpg (a baseline RGB JPEG of the json's size) and, across the synthetic subsets, one prompt
per key. Each check returns the (kind, detail) pairs it found; :func:`_check_sample` reports them, one problem
per kind and sample.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

from finet2i.plumbing.answers import CHAT_TOKEN, REPLACEMENT, STRAY_THINK, markup_in
from finet2i.release.layout import ASPECT_RATIOS, FEATURES, KEY_RE, MEMBERS, NOT_NULL, RELEASE_KEYS
from finet2i.release.validate.report import _Collector
from finet2i.release.validate.tars import Report, _RawSample

_SNIPPET = 60


@dataclass
class _FolderContext:
    """What the checks of one subset folder share: its name, where to report, keys seen so far."""

    name: str
    synthetic: bool
    square: bool
    out: _Collector
    prompts: dict[str, tuple[bytes, str, str]]
    seen: dict[str, str] = field(default_factory=dict)  # key -> the tar it was first seen in


Issues = list[tuple[str, str]]  # (kind, detail) found in one sample


def _check_sample(sample: _RawSample, where: str, ctx: _FolderContext, in_tar: set[str], report: Report) -> None:
    key = sample.key
    issues: Issues = []
    issues += _check_key(key, ctx, in_tar, where)
    issues += _check_members(sample)
    meta: dict[str, Any] | None = None
    if "json" in sample.members:
        meta, json_issues = _check_json(sample.members["json"], key, ctx)
        issues += json_issues
    if "txt" in sample.members:
        issues += _check_txt(sample.members["txt"], meta)
    if "jpg" in sample.members:
        issues += _check_jpg(sample.members["jpg"], meta)
    if ctx.synthetic and meta is not None and isinstance(meta.get("prompt"), str):
        issues += _check_cross_subset(key, meta["prompt"], ctx, where)
    grouped: dict[str, list[str]] = {}
    for kind, detail in issues:
        grouped.setdefault(kind, []).append(detail)
    for kind, details in grouped.items():
        report(kind, key, "; ".join(details))


def _check_key(key: str, ctx: _FolderContext, in_tar: set[str], where: str) -> Issues:
    issues: Issues = []
    if not KEY_RE.match(key):
        issues.append(("bad_key", f"key {key!r} is not a lowercase uuid"))
    if key in in_tar:
        issues.append(("duplicate_key", f"key {key} appears twice in this tar (its members are not together)"))
    elif key in ctx.seen:
        issues.append(("duplicate_key", f"key {key} is also in {ctx.seen[key]}"))
    else:
        ctx.seen[key] = where
    return issues


def _check_members(sample: _RawSample) -> Issues:
    issues: Issues = []
    present = list(dict.fromkeys(sample.order))
    missing = [ext for ext in MEMBERS if ext not in sample.members]
    extra = [ext for ext in present if ext not in MEMBERS]
    repeated = sorted({ext for ext in sample.order if sample.order.count(ext) > 1})
    if missing:
        issues.append(("missing_member", "no " + ", ".join(f"{sample.key}.{e}" for e in missing)))
    if extra:
        issues.append(("extra_member", "unexpected " + ", ".join(f"{sample.key}.{e}" for e in extra)))
    if repeated:
        issues.append(("duplicate_member", "twice: " + ", ".join(f"{sample.key}.{e}" for e in repeated)))
    known = [ext for ext in present if ext in MEMBERS]
    if known != [ext for ext in MEMBERS if ext in known]:
        issues.append(("member_order", f"members in order {', '.join(known)}; the release has jpg, json, txt"))
    return issues


# ---- json


def _check_json(raw: bytes, key: str, ctx: _FolderContext) -> tuple[dict[str, Any] | None, Issues]:
    """Parse and check the json; returns the parsed object (None when unusable) for the txt and jpg checks."""
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        return None, [("bad_json", f"{key}.json does not parse: {e}")]
    if not isinstance(meta, dict):
        return None, [("bad_json", f"{key}.json holds a {type(meta).__name__}, not an object")]
    issues: Issues = []
    missing = [k for k in RELEASE_KEYS if k not in meta]
    extra = [k for k in meta if k not in FEATURES]
    if missing or extra:
        parts = [f"{word} {_names(keys)}" for word, keys in (("missing", missing), ("extra", extra)) if keys]
        issues.append(("json_keys", f"{key}.json: " + "; ".join(parts)))
    for k in RELEASE_KEYS:
        if k not in meta:
            continue
        value = meta[k]
        if value is None:
            if k in NOT_NULL:
                issues.append(("json_null", f"{k} is null"))
        elif not _has_type(value, FEATURES[k]):
            issues.append(("json_type", f"{k}: expected {_type_text(FEATURES[k])}, got {_short(value)}"))
    issues += _check_values(meta, key)
    if ctx.synthetic:
        issues += _check_aspect(meta, ctx.square)
    return meta, issues


def _has_type(value: Any, spec: str | list[str]) -> bool:
    if isinstance(spec, list):
        return isinstance(value, list) and all(_has_type(v, spec[0]) for v in value)
    if spec == "string":
        return isinstance(value, str)
    if spec == "bool":
        return isinstance(value, bool)
    if spec == "int64":
        return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
    if spec == "float64":  # a whole score written as 6 is still a float64 to HF datasets
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    raise ValueError(f"release.FEATURES has a type this validator does not know: {spec!r}")


def _names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} (+{len(names) - limit} more)"


def _type_text(spec: str | list[str]) -> str:
    return f"list of {spec[0]}" if isinstance(spec, list) else spec


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    text = text if len(text) <= _SNIPPET else text[:_SNIPPET] + "..."
    return f"{type(value).__name__} {text}"


def _snippet(text: str) -> str:
    return repr(text if len(text) <= _SNIPPET else text[:_SNIPPET] + "...")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_values(meta: dict[str, Any], key: str) -> Issues:
    """Values of the right type that still cannot be right; a value of the wrong type is left to json_type."""
    issues: Issues = []
    sample_id = meta.get("id")
    if isinstance(sample_id, str) and sample_id != key:
        issues.append(("id_mismatch", f"json id {sample_id!r} is not the member key {key!r}"))
    for k in ("length", "enhanced_length"):
        if _is_int(meta.get(k)) and meta[k] < 0:
            issues.append(("json_value", f"{k} is negative: {meta[k]}"))
    res = meta.get("image_resolution")
    if isinstance(res, list) and all(_is_int(v) for v in res) and (len(res) != 2 or min(res) <= 0):
        issues.append(("json_value", f"image_resolution {res} is not [width, height] of two positive ints"))
    score = meta.get("aesthetic_predictor_v_2_5_score")
    if isinstance(score, float) and not math.isfinite(score):
        issues.append(("json_value", f"aesthetic_predictor_v_2_5_score is {score}"))
    prompt = meta.get("prompt")
    if isinstance(prompt, str) and not prompt.strip():
        issues.append(("json_value", "prompt is blank"))
    for k in ("prompt", "enhanced_prompt"):
        issues += _markup_issues(meta.get(k), f"json {k}")
    if meta.get("image_generated_with_enhanced_prompt") is True:
        enhanced = meta.get("enhanced_prompt")
        if not isinstance(enhanced, str) or not enhanced.strip():
            issues.append(("json_value", "image_generated_with_enhanced_prompt is true but enhanced_prompt is "
                                         f"{'null' if enhanced is None else _short(enhanced)}"))
    return issues


def _resolution(meta: dict[str, Any] | None) -> tuple[int, int] | None:
    """The json's (width, height) when it is well formed, else None (its problem is reported elsewhere)."""
    res = None if meta is None else meta.get("image_resolution")
    if isinstance(res, list) and len(res) == 2 and all(_is_int(v) and v > 0 for v in res):
        return res[0], res[1]
    return None


def _check_aspect(meta: dict[str, Any], square: bool) -> Issues:
    """Synthetic images are rendered at a Table 8 size; the square subsets only at its square sizes."""
    issues: Issues = []
    label = meta.get("image_aspect_ratio")
    if isinstance(label, str) and label not in ASPECT_RATIOS:
        issues.append(("aspect_ratio", f"image_aspect_ratio {label!r} is not one of {', '.join(ASPECT_RATIOS)}"))
    if square:
        if isinstance(label, str) and label != "1:1":
            issues.append(("aspect_ratio", f"image_aspect_ratio {label!r} in a square-resolution subset"))
        size = _resolution(meta)
        if size is not None and size[0] != size[1]:
            issues.append(("aspect_ratio", f"image_resolution {list(size)} is not square"))
    return issues


def _markup_issues(text: Any, where: str) -> Issues:
    """Model control markup that must never ship: think tags and chat-template tokens (``control_markup``),
    U+FFFD replacement characters (``replacement_char``)."""
    if not isinstance(text, str):
        return []
    found = markup_in(text)
    issues: Issues = []
    if STRAY_THINK in found or CHAT_TOKEN in found:
        issues.append(("control_markup", f"{where} holds model control markup: {_snippet(text)}"))
    if REPLACEMENT in found:
        issues.append(("replacement_char", f"{where} holds U+FFFD replacement characters: {_snippet(text)}"))
    return issues


# ---- txt


def _check_txt(raw: bytes, meta: dict[str, Any] | None) -> Issues:
    """The txt is what a webdataset loader trains on: the prompt the image was rendered with, never blank."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return [("bad_txt", f"txt is not UTF-8: {e}")]
    if not text.strip():
        return [("empty_txt", f"txt is {'empty' if not text else 'blank'}")]
    markup = _markup_issues(text, "txt")
    if markup:
        return markup
    if meta is None or not isinstance(meta.get("image_generated_with_enhanced_prompt"), bool):
        return []
    source = "enhanced_prompt" if meta["image_generated_with_enhanced_prompt"] else "prompt"
    expected = meta.get(source)
    if not isinstance(expected, str):
        return []  # already a json problem
    # Ends are stripped on both sides: a trailing newline does not change the prompt a model is trained on.
    if text.strip() != expected.strip():
        return [("txt_mismatch", f"txt {_snippet(text.strip())} is not json {source} {_snippet(expected.strip())}")]
    return []


# ---- jpg


def _check_jpg(raw: bytes, meta: dict[str, Any] | None) -> Issues:
    """A baseline RGB JPEG of the json's size: what the release holds and what its loaders assume."""
    if raw[:2] != b"\xff\xd8":
        return [("not_jpeg", f"jpg starts with {raw[:8].hex(' ') or 'nothing'}, not the JPEG marker ff d8")]
    from PIL import Image

    issues: Issues = []
    try:
        with Image.open(io.BytesIO(raw)) as im:
            if im.format not in ("JPEG", "MPO"):  # MPO: a camera JPEG with extra frames, still a JPEG
                return [("not_jpeg", f"PIL reads the jpg as {im.format}")]
            if im.info.get("progressive") or im.info.get("progression"):
                issues.append(("not_baseline_jpeg", "jpg is progressive"))
            if im.mode != "RGB":
                issues.append(("not_rgb", f"jpg mode is {im.mode}, not RGB"))
            im.load()
            size = im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return [*issues, ("undecodable_image", f"jpg does not decode: {e}")]
    expected = _resolution(meta)
    if expected is not None and tuple(size) != expected:
        issues.append(("resolution_mismatch", f"jpg is {size[0]}x{size[1]}, json image_resolution is "
                                              f"[{expected[0]}, {expected[1]}]"))
    return issues


# ---- across subsets


def _check_cross_subset(key: str, prompt: str, ctx: _FolderContext, where: str) -> Issues:
    """One prompt has one key in every synthetic subset it survives in; another prompt under that key means two
    prompts were given the same key (or a subset was packaged from another run)."""
    digest = hashlib.blake2b(prompt.encode("utf-8"), digest_size=16).digest()
    first = ctx.prompts.get(key)
    if first is None:
        ctx.prompts[key] = (digest, ctx.name, where)
        return []
    if first[1] != ctx.name and first[0] != digest:
        return [("cross_subset_prompt", f"json prompt {_snippet(prompt)} differs from the prompt of the same key "
                                        f"in {first[2]}")]
    return []
