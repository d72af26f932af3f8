"""Validate a workflow config before anything is planned or submitted.

Three layers, each failing with the offending key in the message and what to do:
1. JSON Schema (``src/finet2i/core/schema/config.schema.yaml``, shipped as package data): unknown or misspelled
   keys, wrong types, out-of-range values; defaults are filled in.
2. Semantic checks the schema cannot express: generator weights that do not add up to something positive,
   candidate ranges, referenced files (taxonomy, resolution table) that must exist and parse.
3. Inputs: curated sources must exist; every model ``{path: ...}`` must exist and every
   ``{id, revision}`` must be in the Hugging Face cache.
   During a dry run this layer only warns, so that a plan can be inspected on a login node without weights.

Snakemake's own ``snakemake.utils.validate`` does layer 1 too, but reports the first jsonschema error without
the key path and cannot suggest the key the user meant; this module does both and is callable from the CLI
(``finet2i check-config``) and from tests without a workflow object.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from finet2i.core.settings import SCHEMA_PATH  # shipped in the package

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config mistake, reported before any job is planned."""


def load_yaml(path: str | os.PathLike[str]) -> Any:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: file not found")
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e


def _schema(schema_path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    return load_yaml(schema_path or SCHEMA_PATH)


def _validator_with_defaults(schema: dict[str, Any]):  # type: ignore[no-untyped-def]
    from jsonschema import Draft202012Validator, validators

    base = Draft202012Validator

    def resolve(sub: dict[str, Any]) -> dict[str, Any]:
        # Local refs only ("#/definitions/x"): enough for our schema, and keeps defaults declared once.
        ref = sub.get("$ref", "")
        if "default" not in sub and ref.startswith("#/"):
            node: Any = schema
            for part in ref[2:].split("/"):
                node = node[part]
            return {**node, **sub}
        return sub

    def set_defaults(validator, properties, instance, schema_):  # type: ignore[no-untyped-def]
        if isinstance(instance, dict):
            for name, sub in properties.items():
                sub = resolve(sub)
                if "default" in sub and name not in instance:
                    instance[name] = _copy(sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema_)

    return validators.extend(base, {"properties": set_defaults})(schema)


def _copy(value: Any) -> Any:
    import copy

    return copy.deepcopy(value)


def _key_path(parts: Any) -> str:
    return ".".join(str(p) for p in parts) or "<top level>"


def _schema_errors(config: dict[str, Any], schema: dict[str, Any]) -> Iterator[str]:
    validator = _validator_with_defaults(schema)
    for err in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path)):
        where = _key_path(err.absolute_path)
        if err.validator == "additionalProperties":
            allowed = list(err.schema.get("properties", {}))
            extra = [k for k in err.instance if k not in allowed]
            for k in extra:
                hint = difflib.get_close_matches(k, allowed, n=1)
                dotted = f"{where}.{k}" if err.absolute_path else k
                msg = f"config key {dotted}: unknown key"
                msg += f"; did you mean '{hint[0]}'?" if hint else f"; allowed here: {', '.join(allowed)}"
                yield msg
        elif err.validator == "required":
            yield f"config key {where}: {err.message}"
        elif err.validator == "oneOf" and isinstance(err.instance, dict):
            yield (f"config key {where}: a model is either {{path: <local folder or file>}} or "
                   f"{{id: <hub id>, revision: <commit>}}, got {err.instance!r}")
        else:
            yield f"config key {where}: {err.message}"


def _semantic_errors(config: dict[str, Any], base_dir: Path) -> Iterator[str]:
    gens = config["generate"]["generators"]
    if sum(float(g["weight"]) for g in gens.values()) <= 0:
        yield "config key generate.generators: the weights add up to 0; give at least one generator a weight > 0"
    cand = config["generate"].get("candidates", {"min": 1, "max": 3})
    if cand["min"] > cand["max"]:
        yield f"config key generate.candidates: min ({cand['min']}) is larger than max ({cand['max']})"
    for key in ("taxonomy",):
        p = base_dir / config[key]
        if not p.exists():
            yield f"config key {key}: file {p} does not exist"
    yield from _listed_source_errors(config)
    for i, entry in enumerate((config.get("curated") or {}).get("sources") or []):
        src = source_path(entry)
        if src is None:
            continue
        if "://" in src:
            yield (f"config key curated.sources[{i}]: {src} is a URL; a source is a local folder of images or a "
                   f"local file with one URL per line (put the URL in such a file)")
    res = base_dir / config["generate"]["resolutions"]
    if not res.exists():
        yield f"config key generate.resolutions: file {res} does not exist"
    yield from _finetune_errors(config, base_dir)


def _finetune_errors(config: dict[str, Any], base_dir: Path) -> Iterator[str]:
    """The fine-tune's models must be named when it is switched on; a prompt file must exist when named."""
    from finet2i.core.pipeline import model_keys

    if (config.get("finetune") or {}).get("enabled"):
        for key in model_keys(config):
            if key not in config["models"]:
                yield (f"config key models.{key}: finetune.enabled needs it (finetune_base: an SD-XL-family "
                       f"diffusers pipeline such as {{id: stabilityai/stable-diffusion-xl-base-1.0, revision: "
                       f"<commit>}}; clip_scorer: a CLIP model such as openai/clip-vit-large-patch14; "
                       f"docs/finetune.md)")
    prompts = (config.get("evaluate") or {}).get("prompts")
    if prompts and not (base_dir / prompts).is_file():
        yield f"config key evaluate.prompts: file {base_dir / prompts} does not exist (a TSV with a Prompt column)"


def _taxonomy_errors(config: dict[str, Any], base_dir: Path) -> Iterator[str]:
    p = base_dir / config["taxonomy"]
    if not p.exists():
        return
    try:
        from finet2i.recipe import taxonomy
    except ImportError:  # pragma: no cover - the module ships with the package
        return
    loader = getattr(taxonomy, "load_taxonomy", None)
    if loader is None:
        return
    try:
        loader(p)
    except Exception as e:  # noqa: BLE001 - any loader error is a config error, shown with the file
        yield f"config key taxonomy ({p}): {e}"


def source_path(entry: Any) -> str | None:
    """The path of a curated.sources entry (``"path"`` or ``{path: ..., name: ...}``); None for an API source."""
    if isinstance(entry, dict):
        return str(entry["path"]) if entry.get("path") else None
    return str(entry)


def _source_errors(config: dict[str, Any], schema: dict[str, Any]) -> Iterator[str]:
    """Each object in curated.sources against ``definitions/source_<type>`` (filling that type's defaults), so
    that an error names the entry's key and a Pexels entry never gets Pixabay's defaults."""
    for i, entry in enumerate((config.get("curated") or {}).get("sources") or []):
        if not isinstance(entry, dict):
            continue
        kind = entry.get("type") or "folder"
        definition = schema["definitions"].get(f"source_{'folder' if kind == 'url_list' else kind}")
        if definition is None:
            yield (f"config key curated.sources[{i}].type: unknown source type {kind!r}; one of folder, url_list, "
                   f"unsplash_lite, pexels, pixabay")
            continue
        sub = {**definition, "definitions": schema["definitions"]}
        for msg in _schema_errors(entry, sub):
            yield msg.replace("config key ", f"config key curated.sources[{i}].", 1).replace(
                f"curated.sources[{i}].<top level>", f"curated.sources[{i}]")


def _listed_source_errors(config: dict[str, Any]) -> Iterator[str]:
    from finet2i.sources import API_TYPES, is_listed, listed_name

    seen: dict[str, int] = {}
    for i, entry in enumerate((config.get("curated") or {}).get("sources") or []):
        if not is_listed(entry):
            continue
        name = listed_name(entry)
        if name in seen:
            yield (f"config key curated.sources[{i}].name: {name!r} is also the name of curated.sources"
                   f"[{seen[name]}]; give each listed source its own name")
        seen[name] = i
        if entry["type"] in API_TYPES and not entry.get("queries") and not entry.get("curated"):
            yield f"config key curated.sources[{i}].queries: a {entry['type']} source needs at least one query"
        if entry["type"] == "pixabay" and entry.get("image_size") in FULL_ACCESS_SIZES \
                and not entry.get("full_api_access"):
            yield (f"config key curated.sources[{i}].image_size: {entry['image_size']} is only in the answers of a "
                   f"key approved for Pixabay's full API access (https://pixabay.com/api/docs/); without it every "
                   f"photo would be dropped as missing_fields. Use largeImageURL (1280 px) or webformatURL, or set "
                   f"full_api_access: true if your key has it")
    if (config.get("curated") or {}).get("enabled", True):
        yield from terms_errors(config)


FULL_ACCESS_SIZES = ("fullHDURL", "imageURL")  # Pixabay answers carry them only with full API access


def terms_errors(config: dict[str, Any]) -> list[str]:
    """The terms gate (finet2i.sources.terms): every Pexels, Pixabay or Unsplash Lite source must state in the
    config how this run is allowed to use it; one message per source without, naming its terms page."""
    from finet2i.sources.terms import refusal

    out = []
    for i, entry in enumerate((config.get("curated") or {}).get("sources") or []):
        if isinstance(entry, dict):
            why = refusal(entry, f"config key curated.sources[{i}].terms")
            if why:
                out.append(why)
    return out


def missing_keys(config: dict[str, Any], base_dir: str | os.PathLike[str] = ".",
                 environ: Any = None) -> list[str]:
    """Messages for every API source whose key is not in the environment and whose manifest is not listed yet."""
    from finet2i.sources import API_TYPES, listed_name, manifest_path

    env = dict(os.environ if environ is None else environ)
    out = []
    if not config.get("curated", {}).get("enabled", True):
        return out
    for i, entry in enumerate(config["curated"].get("sources", [])):
        if not isinstance(entry, dict) or entry.get("type") not in API_TYPES:
            continue
        if (Path(base_dir) / manifest_path(listed_name(entry))).exists():
            continue  # listed already: the key is needed no more
        if not (env.get(entry["key_env"]) or "").strip():
            out.append(f"config key curated.sources[{i}] ({entry['type']}): the API key is not set: export "
                       f"{entry['key_env']}=<your key> on the node that runs the listing (docs/real-sources.md)")
    return out


def missing_sources(config: dict[str, Any], base_dir: str | os.PathLike[str] = ".") -> list[str]:
    """Messages for every curated source (folder, URL-list file, Unsplash Lite table) that does not exist, and
    every API source without its key."""
    out = []
    if config.get("curated", {}).get("enabled", True):
        out += missing_keys(config, base_dir)
        for i, entry in enumerate(config["curated"].get("sources", [])):
            src = source_path(entry)
            if src is not None and "://" not in src and not (Path(base_dir) / src).exists():
                out.append(f"config key curated.sources[{i}]: {src} does not exist (a folder of images or a "
                           f"file with one URL per line)")
    return out


def missing_models(config: dict[str, Any], base_dir: str | os.PathLike[str] = ".") -> list[str]:
    """Messages for every model that is not available locally (see :meth:`ModelSpec.local_path`)."""
    from finet2i.models.spec import ModelNotAvailable, ModelSpec

    needed = used_model_keys(config)
    out = []
    for key in needed:
        spec = ModelSpec.from_config(f"models.{key}", config["models"][key], base_dir=base_dir)
        try:
            spec.local_path()
        except ModelNotAvailable as e:
            out.append(str(e))
    return out


def used_model_keys(config: dict[str, Any]) -> list[str]:
    """The model keys the enabled stages need (a switched-off stage needs no weights): finet2i.core.pipeline."""
    from finet2i.core.pipeline import model_keys

    return model_keys(config)


def validate_config(config: dict[str, Any], *, base_dir: str | os.PathLike[str] = ".",
                    check_models: bool = True, dryrun: bool = False,
                    schema_path: str | os.PathLike[str] | None = None,
                    files: Sequence[str | os.PathLike[str]] = ()) -> dict[str, Any]:
    """Validate ``config`` in place (filling defaults) and return it; raise :class:`ConfigError` listing all
    problems. With ``dryrun=True`` missing models are logged as warnings instead of failing. ``files``: the
    config files ``config`` was merged from, in order; each error then names the file that set its key."""
    base = Path(base_dir)
    schema = _schema(schema_path)
    errors = list(_schema_errors(config, schema))
    if not errors:
        errors += list(_source_errors(config, schema))
    if not errors:
        errors += list(_semantic_errors(config, base))
        errors += list(_taxonomy_errors(config, base))
    if not errors and check_models:
        missing = missing_sources(config, base) + missing_models(config, base)
        if missing and dryrun:
            for m in missing:
                log.warning("dry run: %s", m)
        else:
            errors += missing
    if errors:
        if files:
            errors = [with_origin(e, files) for e in errors]
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(errors))
    unpinned = unpinned_models(config)
    if unpinned:
        warn_once(f"models not pinned to a commit ({', '.join(unpinned)}): a moved branch changes the weights "
                  f"without rerunning anything; run `finet2i fetch-models --pin <config>` to write the commits "
                  f"into the config")
    return config


_WARNED: set[str] = set()


def warn_once(message: str) -> None:
    """Log a warning the first time this process meets it: a command that loads the config and then parses the
    Snakefile (preflight) validates the same config twice, and one warning is enough."""
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning("%s", message)


# The key an error names: "config key a.b[2].c: ..." (the schema, the sources) or "models.x: ..." (a model).
_KEY = re.compile(r"^(?:config key ([^:\s]+)|(models\.\w+):)")


def _parts(dotted: str) -> list[str | int]:
    """``curated.sources[2].type`` -> ["curated", "sources", 2, "type"]."""
    out: list[str | int] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", dotted):
        out.append(int(index) if index else name)
    return out


def _holds(data: Any, parts: list[str | int]) -> bool:
    for part in parts:
        if isinstance(part, int) and isinstance(data, list) and part < len(data):
            data = data[part]
        elif isinstance(part, str) and isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return False
    return True


def key_origin(dotted: str, files: Sequence[str | os.PathLike[str]]) -> str:
    """The config file that set ``dotted`` (the last one that holds its longest present prefix, as the files
    are merged in order); all of them when none holds any part of it (a key that is missing everywhere)."""
    parts = _parts(dotted)
    loaded = []
    for f in files:
        try:
            loaded.append((str(f), yaml.safe_load(Path(f).read_text())))
        except (OSError, yaml.YAMLError):
            continue
    for n in range(len(parts), 0, -1):
        holders = [name for name, data in loaded if _holds(data, parts[:n])]
        if holders:
            return holders[-1]
    return " + ".join(str(f) for f in files)


def with_origin(message: str, files: Sequence[str | os.PathLike[str]]) -> str:
    """``config key a.b: ...`` -> ``<file>: config key a.b: ...`` (the file that set a.b)."""
    m = _KEY.match(message)
    key = m and (m.group(1) or m.group(2))
    return f"{key_origin(key, files) if key else ' + '.join(str(f) for f in files)}: {message}"


def unpinned_models(config: dict[str, Any]) -> list[str]:
    """The used hub models whose revision is a branch, a tag or missing instead of a commit hash."""
    from finet2i.models.spec import is_pinned

    return [f"models.{key}@{config['models'][key].get('revision')}" for key in used_model_keys(config)
            if "id" in config["models"][key] and not is_pinned(config["models"][key].get("revision"))]


def check_available(config: dict[str, Any], base_dir: str | os.PathLike[str] = ".",
                    files: Sequence[str | os.PathLike[str]] = ()) -> None:
    """Raise :class:`ConfigError` listing every missing model or curated source (the workflow's onstart);
    ``files``: the config files, so that each line names the one that set the key."""
    refused = terms_errors(config) if config.get("curated", {}).get("enabled", True) else []
    if refused:  # validate_config refuses these at parse time already; the run's start says it again
        raise ConfigError("refused by the sources' terms, nothing was run:\n  - " + "\n  - ".join(refused))
    missing = missing_sources(config, base_dir) + missing_models(config, base_dir)
    if missing and files:
        missing = [with_origin(m, files) for m in missing]
    if missing:
        raise ConfigError("not available locally, nothing was run:\n  - " + "\n  - ".join(missing))


def load_config(*paths: str | os.PathLike[str], base_dir: str | os.PathLike[str] = ".",
                check_models: bool = True, dryrun: bool = False) -> dict[str, Any]:
    """Load one or more YAML files (later ones override top-level keys, as ``--configfile`` does)."""
    config: dict[str, Any] = {}
    for p in paths:
        data = load_yaml(p)
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a mapping of config keys at the top level")
        _merge(config, data)
    return validate_config(config, base_dir=base_dir, check_models=check_models, dryrun=dryrun, files=paths)


def _merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    # Snakemake merges --configfile files recursively; do the same.
    for k, v in other.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v
