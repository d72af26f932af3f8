"""What each stage dropped, as DuckDB queries over the stages' record tables, and the report's funnel above them.

**Dropped records.** A stage's record tables (``results/<stage>/[<subset>/]<shard>.parquet``) are queried in
place, never loaded: the rows with ``kept = false``, grouped by ``drop_reason``, one page at a time. A stage's
*evidence* is the columns its table adds to its upstream's (dedup: ``duplicate_of``, ``similarity``; guard:
``guard_verdict``, ``guard_categories``, ``guard_raw``; pair_filter: the judge's reasoning and answer), so a
new stage gets its evidence shown without a line here. The image of a dropped record is read from the nearest
table at or above the stage that holds ``image`` bytes (generate for the judge, curated_ingest for real photos).

At the release's size (20.6M judged pairs in 4,480 tables) reading every table's verdict columns for each page
would take seconds, so a stage's dropped records are listed once, the first time a page of it is asked for, into
a DuckDB file in the cache (``dropped-<stage>-<hash of its tables>.duckdb``: subset, reason, file, id, and the
record's position in its reason's list); a page is then a range of that list, and only the files on the page are
read for their evidence.

Stage names and order come from ``finet2i.core.pipeline``; the funnel is ``finet2i.reporting.funnel.read_stats``
over the same stats JSONs the report reads.

:class:`DroppedRecords` is mixed into :class:`finet2i.explore.catalog.Catalog`, which gives it the results folder,
a cursor per query and the caches these queries fill (set in the catalog's ``__init__``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finet2i.core import pipeline
from finet2i.explore.query import _SAFE_ID, ExploreError, _files_sql

DROPPED_PAGE_SIZE = 24
_SHARD_TABLE = re.compile(r"^[A-Za-z0-9_-]+\.parquet$")
# A stage table's subset and shard, from its path (results/<stage>/[<subset>/]<shard>.parquet).
_SUBSET_SQL = r"regexp_extract(filename, '([^/\\]+)[/\\][^/\\]+$', 1)"
_SHARD_SQL = r"regexp_extract(filename, '([^/\\]+)\.parquet$', 1)"
# Shown first for every dropped record when its table has them: what the record was and its score.
SHOWN_FIRST = ("prompt", "enhanced_prompt", "aesthetic_predictor_v_2_5_score", "source", "locator")


@dataclass
class DroppedPage:
    stage: str
    reasons: list[dict[str, Any]]  # {"subset", "reason", "count"}
    reason: str | None
    subset: str | None
    total: int  # records with the selected reason (and subset)
    rows: list[dict[str, Any]]
    evidence: list[str]  # columns shown as evidence
    image_stage: str | None  # the stage whose table holds the image bytes of these records
    page: int
    pages: int
    duplicates: dict[str, str] = field(default_factory=dict)  # duplicate_of id -> its prompt (dedup)


class DroppedRecords:
    """A stage's record tables, the funnel, and the records a stage dropped with their evidence, one page at a
    time: the stage half of :class:`~finet2i.explore.catalog.Catalog`."""

    # Given by the catalog (set in its ``__init__``).
    root: Path
    cache: Path
    _lock: Any
    _cursor: Callable[[], Any]
    _describe: dict[tuple[str, ...], list[str]]
    _tables: dict[str, list[Path]]
    _funnel: list[Any] | None
    _reasons: dict[str, list[dict[str, Any]]]

    def record_stages(self) -> list[pipeline.Stage]:
        """The pipeline's stages that write record tables and have some under this results folder."""
        return [s for s in pipeline.STAGES if s.table and self.stage_tables(s.name)]

    def stage_tables(self, stage: str) -> list[Path]:
        """A stage's record tables (listed once: the explorer looks at a finished run)."""
        st = pipeline.BY_NAME.get(stage)
        if st is None:
            raise ExploreError(f"unknown stage {stage!r}: expected one of {list(pipeline.stage_order())}")
        if st.name not in self._tables:
            pattern = "*/*.parquet" if st.per_subset else "*.parquet"
            self._tables[st.name] = sorted(p for p in (self.root / st.name).glob(pattern)
                                           if _SHARD_TABLE.match(p.name))
        return self._tables[st.name]

    def funnel(self) -> list[Any]:
        """The report's funnel (read once: at 1,120 shards it is some 20,000 stats JSONs)."""
        if self._funnel is None:
            self._funnel = self._read_funnel()
        return self._funnel

    def _read_funnel(self) -> list[Any]:
        """``finet2i.reporting.funnel.read_stats`` over every stage's per-shard stats JSONs (the report's funnel)."""
        from finet2i.reporting.funnel import read_stats

        paths = []
        subsets = set()
        for st in pipeline.STAGES:
            base = self.root / st.name
            for p in base.glob("*/*.stats.json" if st.per_subset else "*.stats.json"):
                stem = p.name[: -len(".stats.json")]
                if any(q.name != p.name and q.name.startswith(stem + ".") for q in p.parent.glob(stem + ".*")):
                    paths.append(p)  # a shard's stats beside its output (not dedup/cross.stats.json)
                    if st.per_subset:
                        subsets.add(p.parent.name)
        return read_stats(sorted(paths), [*sorted(subsets), "real"])

    def _columns(self, files: Sequence[Path]) -> list[str]:
        key = tuple(str(f) for f in files)
        if key not in self._describe:
            src = f"read_parquet({_files_sql(files)}, union_by_name=true)"
            self._describe[key] = [r[0] for r in self._cursor().execute(f"DESCRIBE SELECT * FROM {src}").fetchall()
                                   if r[1] != "BLOB" or r[0] == "image"]  # bytes are served, never shown
        return self._describe[key]

    def _upstream_with_table(self, stage: pipeline.Stage) -> pipeline.Stage | None:
        """The stage whose table this one read: ``reads``, else the nearest earlier stage of its branch with
        tables in this results folder (the run's config decided which were on)."""
        if stage.reads:
            return pipeline.BY_NAME[stage.reads]
        before = pipeline.STAGES[: pipeline.STAGES.index(stage)]
        for st in reversed(before):
            if st.branch == stage.branch and st.table and self.stage_tables(st.name):
                return st
        return None

    def evidence_columns(self, stage: str) -> list[str]:
        st = pipeline.BY_NAME[stage]
        own = self._columns(self.stage_tables(stage))
        up = self._upstream_with_table(st)
        upstream = set(self._columns(self.stage_tables(up.name))) if up else set()
        shown_anyway = {"id", "kept", "drop_reason", "image", *SHOWN_FIRST}
        return [c for c in own if c not in upstream and c not in shown_anyway]

    def image_stage(self, stage: str) -> str | None:
        """The nearest stage at or above ``stage`` whose table holds ``image`` bytes for its records."""
        st: pipeline.Stage | None = pipeline.BY_NAME[stage]
        while st is not None:
            files = self.stage_tables(st.name)
            if files and "image" in self._columns(files):
                return st.name
            st = self._upstream_with_table(st)
        return None

    def _drop_list(self, stage: str) -> Any:
        """A read-only connection to the stage's list of dropped records, built on first use (see the module
        docstring); rebuilt when its tables change."""
        import hashlib

        import duckdb

        lists = self.__dict__.setdefault("_drop_lists", {})
        if stage in lists:
            return lists[stage]
        files = self.stage_tables(stage)
        if not files:
            raise ExploreError(f"{self.root / stage}: no record table of stage {stage!r} (has it run?)")
        h = hashlib.sha256(str(self.root).encode())
        for p in files:
            st = p.stat()
            h.update(f"{p.relative_to(self.root)} {st.st_size} {st.st_mtime_ns}\n".encode())
        db = self.cache / f"dropped-{stage}-{h.hexdigest()[:16]}.duckdb"
        with self._lock:
            if not db.exists():
                import os

                tmp = db.with_name(f".{db.name}.{os.getpid()}.tmp")
                tmp.unlink(missing_ok=True)
                con = duckdb.connect(str(tmp))
                try:
                    sub = _SUBSET_SQL if pipeline.BY_NAME[stage].per_subset else "NULL::VARCHAR"
                    src = f"read_parquet({_files_sql(files)}, union_by_name=true, filename=true)"
                    con.execute(
                        f"CREATE TABLE dropped AS SELECT {sub} AS subset, drop_reason AS reason, filename AS file, "
                        f"id, (row_number() OVER (PARTITION BY {sub}, drop_reason ORDER BY filename, id) - 1) AS n, "
                        f"(row_number() OVER (PARTITION BY drop_reason ORDER BY filename, id) - 1) AS n_all "
                        f"FROM {src} WHERE NOT kept ORDER BY reason, subset, n")
                    con.close()
                    os.replace(tmp, db)
                finally:
                    tmp.unlink(missing_ok=True)
            lists[stage] = duckdb.connect(str(db), read_only=True)
        return lists[stage]

    def drop_reasons(self, stage: str) -> list[dict[str, Any]]:
        """Per (subset, reason), how many records the stage dropped (counted once: a finished run's tables)."""
        if stage not in self._reasons:
            listed = self._drop_list(stage)
            with self._lock:
                con = listed.cursor()
            self._reasons[stage] = [{"subset": s, "reason": r, "count": n} for s, r, n in con.execute(
                "SELECT subset, reason, count(*) FROM dropped GROUP BY ALL ORDER BY 1, 3 DESC").fetchall()]
        return self._reasons[stage]

    def dropped(self, stage: str, *, subset: str | None = None, reason: str | None = None, page: int = 0,
                page_size: int = DROPPED_PAGE_SIZE) -> DroppedPage:
        """One page of the records ``stage`` dropped for ``reason`` (default: its first), with their evidence.

        Two steps, so that a page over thousands of shard tables stays cheap: the page's (file, id) from the
        small ``kept``/``drop_reason``/``id`` columns, then the shown columns from the few files on the page."""
        files = self.stage_tables(stage)
        reasons = self.drop_reasons(stage)
        st = pipeline.BY_NAME[stage]
        if reason is None and reasons:
            first = next((r for r in reasons if subset is None or r["subset"] == subset), reasons[0])
            reason = first["reason"]
        if not st.per_subset:
            subset = None
        total = sum(r["count"] for r in reasons if r["reason"] == reason and subset in (None, r["subset"]))
        cols = self._columns(files)
        evidence = self.evidence_columns(stage)
        shown = [c for c in ("id", *SHOWN_FIRST, *evidence) if c in cols]
        cond, args = "NOT kept AND drop_reason = ?", [reason]
        if subset is not None:
            files = [f for f in files if f.parent.name == subset] or files  # results/<stage>/<subset>/<shard>
            cond += f" AND {_SUBSET_SQL} = ?"
            args.append(subset)
        lists = self._drop_list(stage)
        with self._lock:
            listed = lists.cursor()
        first = page * page_size
        picked = listed.execute(
            "SELECT file, id FROM dropped WHERE reason = ? AND subset = ? AND n >= ? AND n < ? ORDER BY n"
            if subset is not None else
            "SELECT file, id FROM dropped WHERE reason = ? AND n_all >= ? AND n_all < ? ORDER BY n_all",
            [reason, *([subset] if subset is not None else []), first, first + page_size]).fetchall()
        rows: list[dict[str, Any]] = []
        if picked:
            on_page = sorted({Path(f) for f, _ in picked})
            select = ", ".join(f'"{c}"' for c in shown)
            cur = self._cursor().execute(
                f"SELECT {select}, {_SUBSET_SQL if st.per_subset else 'NULL::VARCHAR'} AS _subset, "
                f"{_SHARD_SQL} AS _shard, filename AS _file FROM read_parquet({_files_sql(on_page)}, "
                f"union_by_name=true, filename=true) WHERE {cond} AND list_contains(?, id)",
                [*args, sorted({i for _, i in picked})])
            names = [d[0] for d in cur.description]
            found = {(r["_file"], r["id"]): r for r in (dict(zip(names, x, strict=True)) for x in cur.fetchall())}
            rows = [found[k] for k in picked if k in found]
        wanted = sorted({r["duplicate_of"] for r in rows if r.get("duplicate_of")})
        duplicates = self._prompts_of(files, wanted) if wanted and "prompt" in cols else {}
        return DroppedPage(stage, reasons, reason, subset, total, rows, evidence, self.image_stage(stage), page,
                           max(1, -(-total // max(1, page_size))), duplicates)

    def _prompts_of(self, files: Sequence[Path], ids: Sequence[str]) -> dict[str, str]:
        """The prompts of some records of a stage: a prompt id names its shard (``00003-000042``), so only those
        shards' tables are read when they exist; other ids are looked up in every table."""
        by_stem = {f.stem: f for f in files}
        near = sorted({by_stem[i.split("-", 1)[0]] for i in ids if i.split("-", 1)[0] in by_stem})
        out: dict[str, str] = {}
        for where in ([near] if near else []) + [list(files)]:
            todo = [i for i in ids if i not in out]
            if not todo:
                break
            out.update(self._cursor().execute(
                f"SELECT id, prompt FROM read_parquet({_files_sql(where)}, union_by_name=true) "
                f"WHERE list_contains(?, id)", [todo]).fetchall())
        return out

    def record_image_table(self, stage: str, subset: str | None, shard: str) -> Path | None:
        """The table of ``stage`` (one that holds image bytes) for one subset and shard, if it exists."""
        st = pipeline.BY_NAME.get(stage)
        if st is None or not _SAFE_ID.match(shard) or (subset is not None and not _SAFE_ID.match(subset)):
            return None
        path = self.root / st.name / (subset or "") / f"{shard}.parquet" if st.per_subset and subset else \
            self.root / st.name / f"{shard}.parquet"
        return path if path in set(self.stage_tables(stage)) else None
