"""How a stage names a model: a local path, or a hub id pinned to a revision.

Nothing here downloads anything. ``finet2i fetch-models`` (run once on a node with network, see
:mod:`finet2i.models.fetch`) fills the Hugging Face cache and downloads the few files that are not on the hub; at run
time every model must already be local, and a missing one is an error that names the config key before any job
is submitted (see :func:`finet2i.workflow.config.check_available`, the workflow's ``onstart``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ModelNotAvailable(RuntimeError):
    pass


COMMIT = re.compile(r"[0-9a-f]{40}")


def is_pinned(revision: str | None) -> bool:
    """A full commit hash. A branch (``main``) or no revision can move under a finished run: the params
    trigger would not see new weights, and a rerun would silently mix two models' outputs."""
    return bool(revision and COMMIT.fullmatch(revision))


def pin_revision_text(text: str, model_id: str, commit: str) -> tuple[str, int]:
    """``text`` (a config file) with the revision of every entry for ``model_id`` set to ``commit``, keeping
    comments and layout; returns (new text, entries changed). Handles the flow style the shipped configs use,
    ``{id: org/name, revision: main}``, and the block style (``id:`` and ``revision:`` on their own lines)."""
    if not COMMIT.fullmatch(commit):
        raise ValueError(f"not a commit hash: {commit!r}")
    ident = re.escape(model_id)
    flow = re.compile(rf"(\{{[^}}\n]*\bid:\s*['\"]?{ident}['\"]?\s*,[^}}\n]*?\brevision:\s*)([^,}}\s]+)")
    text, n = flow.subn(lambda m: m.group(1) + commit, text)
    bare = re.compile(rf"(\{{\s*id:\s*['\"]?{ident}['\"]?)(\s*\}})")  # {id: org/name}: no revision yet
    text, n_bare = bare.subn(lambda m: f"{m.group(1)}, revision: {commit}{m.group(2)}", text)
    n += n_bare
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        m = re.match(rf"(\s*)id:\s*['\"]?{ident}['\"]?\s*(#.*)?$", line.rstrip("\n"))
        if not m:
            continue
        indent = m.group(1)
        for j in range(i + 1, len(lines)):
            nxt = lines[j]
            if not nxt.startswith(indent) or nxt[len(indent):len(indent) + 1].isspace():
                break
            r = re.match(rf"({re.escape(indent)}revision:\s*)([^\s#]+)(.*)", nxt, re.S)
            if r:
                lines[j] = r.group(1) + commit + r.group(3)
                n += 1
                break
    return "".join(lines), n


@dataclass(frozen=True)
class ModelSpec:
    """``{path: ...}`` for a local folder, or ``{id: org/name, revision: <commit>}`` for a hub model."""

    key: str  # the config key that named it, for error messages (e.g. "models.guard")
    id: str | None = None
    revision: str | None = None
    path: str | None = None
    given_name: str | None = None  # the config's `name`, when set

    @classmethod
    def from_config(cls, key: str, value: dict[str, Any], base_dir: str | os.PathLike[str] = ".") -> ModelSpec:
        path = value.get("path")
        if path is not None and not os.path.isabs(path):
            path = str(Path(base_dir) / path)
        return cls(key=key, id=value.get("id"), revision=value.get("revision"), path=path,
                   given_name=value.get("name"))

    @property
    def name(self) -> str:
        """What the dataset records as the model's name: the config's ``name``, else the release's form, the
        hub id without its organisation (``Tongyi-MAI/Z-Image-Turbo`` -> ``Z-Image-Turbo``), else the local
        folder's name. The full id and revision stay in the config and the stats (``label``)."""
        if self.given_name:
            return self.given_name
        if self.id:
            return self.id.rsplit("/", 1)[-1]
        return Path(self.path or "?").name

    @property
    def label(self) -> str:
        if self.id:
            return f"{self.id}@{self.revision}" if self.revision else self.id
        return str(self.path)

    def local_path(self) -> str:
        """The folder holding the weights; raises :class:`ModelNotAvailable` with what to do."""
        if self.path is not None:
            if not Path(self.path).exists():
                from finet2i.models.known import KNOWN_FILES

                short = self.key.removeprefix("models.")
                if short in KNOWN_FILES:
                    source = KNOWN_FILES[short]
                    raise ModelNotAvailable(
                        f"{self.key}: model file {self.path} does not exist; run `finet2i fetch-models "
                        f"--accept-license {short} <your config>` on a node with network (it downloads "
                        f"{source.url}, licensed {source.license}), or fix the path in the config")
                raise ModelNotAvailable(
                    f"{self.key}: model folder {self.path} does not exist; fix the path in the config "
                    f"(or build the demo models with `finet2i demo-models`)")
            return self.path
        assert self.id is not None
        from huggingface_hub import snapshot_download

        try:
            return snapshot_download(self.id, revision=self.revision, local_files_only=True)
        except Exception as e:  # the hub raises several types for "not in cache"
            raise ModelNotAvailable(
                f"{self.key}: {self.label} is not in the Hugging Face cache ({e.__class__.__name__}); run "
                f"`finet2i fetch-models <your config>` on a node with network first") from e
