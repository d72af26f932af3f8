"""The dataset card, ``results/dataset/README.md``: what HF datasets reads before it reads any tar.

Its YAML header declares one ``config`` per subset folder that holds samples (``load_dataset(<root>, <folder>)``)
and, per config, ``dataset_info.features``: the webdataset columns (``__key__``, ``__url__``, ``jpg``, ``json``,
``txt``) with the json's 15 keys typed as finet2i.release.layout.FEATURES says. With the types declared, HF never
infers them from whichever tar it opens first (a tar whose samples all have ``task: null`` would make ``task``
a null column, and the next tar's lists fail to cast). The body gives the run's counts per subset and the
report's headline numbers (the funnel), then the rights: per real-photo source its license, the attribution it
asks for, its restrictions, how the config says this run may use it and whether its photos are in this folder
(those that may not be redistributed are in ``results/dataset_internal/`` or were left out), and the terms that
travel with the outputs of each model that wrote part of the dataset.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from finet2i.core import shards
from finet2i.release import layout as release


def features() -> list[dict[str, Any]]:
    """The columns HF's webdataset loader yields for a sample of the release, with their declared types."""
    json_struct = [{"name": k, **release.hf_feature(v)} for k, v in release.FEATURES.items()]
    return [
        {"name": "__key__", "dtype": "string"},
        {"name": "__url__", "dtype": "string"},
        {"name": "jpg", "dtype": "image"},
        {"name": "json", "struct": json_struct},
        {"name": "txt", "dtype": "string"},
    ]


def card_header(manifests: Sequence[dict[str, Any]]) -> dict[str, Any]:
    filled = [m for m in manifests if m["samples"]]
    return {
        "license": "other",
        "task_categories": ["text-to-image"],
        "configs": [{"config_name": m["folder"], "data_files": [{"split": "train", "path": f"{m['folder']}/*.tar"}],
                     **({"default": True} if i == 0 else {})} for i, m in enumerate(filled)],
        "dataset_info": [{"config_name": m["folder"], "features": features(),
                          "splits": [{"name": "train", "num_examples": m["samples"],
                                      "num_bytes": sum(t["tar_bytes"] for t in m["tars"])}]} for m in filled],
    }


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * float(x):.1f}%"


def card_body(manifests: Sequence[dict[str, Any]], funnel: dict[str, Any], settings: Mapping[str, Any],
              rights: Mapping[str, Mapping[str, Any]] | None = None, models: Sequence[Mapping[str, Any]] = (),
              internal: Sequence[dict[str, Any]] = ()) -> str:
    lines = [
        "# Fine-T2I reproduction (finet2i)",
        "",
        "Built by finet2i from the recipe of the Fine-T2I paper, in the layout of the released",
        "`ma-xu/fine-t2i`: one folder per subset, `train-%06d.tar` webdataset shards of "
        f"{manifests[0]['samples_per_tar'] if manifests else '-'} samples, each sample `<uuid>.jpg` (baseline RGB "
        "JPEG), `<uuid>.json` (the release's 15 keys) and `<uuid>.txt` (the prompt the image was rendered with).",
        "One prompt keeps its uuid in each synthetic subset it survives in. Each tar has a parquet index beside it",
        "(the 15 keys plus provenance: template, seeds, candidates, every verdict).",
        "",
        "```python",
        "from datasets import load_dataset",
        f"ds = load_dataset(\"<this folder>\", \"{release.FOLDERS['pe_ar']}\", split=\"train\", streaming=True)",
        "```",
        "",
        "## Samples per subset",
        "",
        "| subset | samples | tars |",
        "|---|---:|---:|",
    ]
    for m in manifests:
        note = "" if m["samples"] else " (no sample survived the filters: no tar, no config)"
        lines.append(f"| `{m['folder']}`{note} | {m['samples']:,} | {len(m['tars'])} |")
    lines.append(f"| **total** | {sum(m['samples'] for m in manifests):,} | "
                 f"{sum(len(m['tars']) for m in manifests)} |")
    comparison = funnel.get("paper_comparison") or []
    if comparison:
        lines += ["", "## The funnel (report headline)", "",
                  "| step | kept | retention | paper kept | paper retention |", "|---|---:|---:|---:|---:|"]
        for row in comparison:
            paper = row.get("paper_kept")
            lines.append(f"| {row['step']} | {row['ours_kept']:,} | {_pct(row.get('ours_retention'))} | "
                         f"{'-' if paper is None else f'{paper:,}'} | {_pct(row.get('paper_retention'))} |")
    flags = funnel.get("flags") or []
    if flags:
        lines += ["", "## Flags raised by the report", ""] + [f"- {f}" for f in flags]
    lines += rights_section(manifests, internal or [], rights or {})
    lines += models_section(models or [])
    lines += ["", f"Run seed: `{settings['seed']}`. "
              + ("Built by the embedded demo (tiny random-weight models): the images are noise, the counts are "
                 "not the paper's." if settings.get("demo") else ""), ""]
    return "\n".join(lines)


def _cell(text: Any) -> str:
    return " ".join(str(text if text is not None else "-").split()).replace("|", "\\|")


def rights_section(manifests: Sequence[dict[str, Any]], internal: Sequence[dict[str, Any]],
                   rights: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Per real-photo source: license, attribution, restrictions, the stated permission, where its photos are."""
    real = next((m for m in manifests if m.get("subset") == "real"), None)
    if real is None and not internal:
        return []
    shipped = dict((real or {}).get("per_source") or {})
    kept_apart: dict[str, int] = {}
    for m in internal:
        for name, n in (m.get("per_source") or {}).items():
            kept_apart[name] = kept_apart.get(name, 0) + n
    names = sorted(set(rights) | set(shipped) | set(kept_apart))
    lines = ["", "## Real photos: licenses, attribution, redistribution", "",
             f"Every sample of `{release.CURATED}` records its source in `image_generator`; its parquet index has "
             "`license` and `redistributable` per sample, and `" + release.CURATED + "/" + release.CREDITS_FILE
             + "` lists the photographer, the photo's page and the license of every sample (one JSON line each).",
             "", "| source | license | samples here | redistribution | attribution asked | terms |",
             "|---|---|---:|---|---|---|"]
    for name in names:
        r = rights.get(name, {})
        pages = r.get("pages") or []
        status = "allowed (the config says so)" if r.get("redistributable", True) else \
            "NOT allowed: not in this dataset"
        lines.append(f"| `{_cell(name)}` | {_cell(r.get('license') or 'not stated in the config')} | "
                     f"{shipped.get(name, 0):,} | {status} | {_cell(r.get('attribution'))} | "
                     f"{_cell(pages[0] if pages else None)} |")
    restricted = [n for n in names if rights.get(n, {}).get("summary") or rights.get(n, {}).get("permission")]
    if restricted:
        lines += ["", "What each site's terms say (a summary; the linked pages govern), and the permission this run's "
                      "config states for it (recorded, not verified):", ""]
        for name in restricted:
            r = rights[name]
            lines.append(f"- `{name}`: {_cell(r.get('summary') or 'no summary')} Stated permission: "
                         f"\"{_cell(r.get('permission'))}\". Read: {', '.join(r.get('pages') or []) or '-'}.")
    if kept_apart:
        apart = ", ".join(f"`{k}` {v:,}" for k, v in sorted(kept_apart.items()))
        lines += ["", f"Photos whose source's terms do not allow redistribution ({apart}) are not in this folder: "
                      "they were assembled apart in `results/dataset_internal/curated/`, for internal use only."]
    not_shipped = [n for n in names if not rights.get(n, {}).get("redistributable", True) and n not in kept_apart]
    if not_shipped:
        lines += ["", f"Sources whose photos may not be redistributed and are left out of every dataset "
                      f"(curated.non_redistributable: omit, or none survived): {', '.join(not_shipped)}."]
    return lines


def models_section(models: Sequence[Mapping[str, Any]]) -> list[str]:
    """The terms that travel with the outputs of each model that wrote part of the dataset."""
    if not models:
        return []
    lines = ["", "## Terms that travel with the models' outputs", "",
             "Training on this dataset means training on these models' outputs. What each model's license says "
             "about its outputs, as published (a summary with quotes; the license text governs; an entry marked "
             "*unverified* could not be read first-hand):", "",
             "| model | what it wrote | license | on its outputs |", "|---|---|---|---|"]
    for m in models:
        link = f"[{_cell(m.get('license'))}]({m['url']})" if m.get("url") else _cell(m.get("license"))
        flag = "" if m.get("verified", True) else " *unverified*"
        lines.append(f"| `{_cell(m.get('key'))}`: {_cell(m.get('model'))} | {_cell(m.get('role'))} | "
                     f"{link}{flag} | {_cell(m.get('on_outputs'))} |")
    return lines


def render_card(manifests: Sequence[dict[str, Any]], funnel: dict[str, Any], settings: Mapping[str, Any],
                rights: Mapping[str, Mapping[str, Any]] | None = None, models: Sequence[Mapping[str, Any]] = (),
                internal: Sequence[dict[str, Any]] = ()) -> str:
    header = yaml.safe_dump(card_header(manifests), sort_keys=False, allow_unicode=True)
    return f"---\n{header}---\n\n{card_body(manifests, funnel, settings, rights, models, internal)}"


def run_dataset_card(manifest_paths: Sequence[str | os.PathLike[str]], funnel_path: str | os.PathLike[str],
                     card_path: str | os.PathLike[str], *, settings: Mapping[str, Any],
                     rights: Mapping[str, Mapping[str, Any]] | None = None,
                     models: Sequence[Mapping[str, Any]] = (),
                     internal_paths: Sequence[str | os.PathLike[str]] = ()) -> str:
    manifests = [shards.read_json(p) for p in manifest_paths]
    internal = [shards.read_json(p) for p in internal_paths]
    funnel = json.loads(open(funnel_path).read()) if funnel_path else {}
    text = render_card(manifests, funnel, settings, rights, models, internal)
    with shards.atomic_path(card_path) as tmp:
        tmp.write_text(text)
    return text
