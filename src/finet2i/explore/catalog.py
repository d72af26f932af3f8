"""What the explorer asks of a run's outputs, as DuckDB queries over its parquet files.

**Samples.** Every release index (``results/dataset/<folder>/train-NNNNNN.parquet``, one row per sample in tar
order) is loaded once into a DuckDB table ``samples`` with the columns the grid filters, searches and shows
(prompts, facets, score, where the image lies in the tar); provenance stays in the parquet files and is read for
one sample when its detail view opens (one row group of one index). The table lives in a DuckDB file in the
cache folder, keyed by the indexes' names, sizes and mtimes: the next start on the same outputs opens it
instead of reading the indexes again (at 6M samples reading them takes minutes; opening the file, a moment).

**Dropped records.** A stage's record tables (``results/<stage>/[<subset>/]<shard>.parquet``) are queried in
place, never loaded: the rows with ``kept = false``, grouped by ``drop_reason``, one page at a time. A stage's
*evidence* is the columns its table adds to its upstream's (dedup: ``duplicate_of``, ``similarity``; guard:
``guard_verdict``, ``guard_categories``, ``guard_raw``; pair_filter: the judge's reasoning and answer), so a
new stage gets its evidence shown without a line here. The image of a dropped record is read from the nearest
table at or above the stage that holds ``image`` bytes (generate for the judge, curated_ingest for real photos).

Stage names and order come from ``finet2i.core.pipeline``; the funnel is ``finet2i.reporting.funnel.read_stats``
over the same stats JSONs the report reads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finet2i.core import pipeline
from finet2i.release import layout as release

log = logging.getLogger(__name__)

PAGE_SIZE = 48
DROPPED_PAGE_SIZE = 24
INDEX_GLOB = "dataset/*/train-*.parquet"
_SHARD_TABLE = re.compile(r"^[A-Za-z0-9_-]+\.parquet$")
_SAFE_ID = re.compile(r"^(?!\.)[A-Za-z0-9_.:-]{1,200}$")  # a file or folder name: never "." or ".."
# A stage table's subset and shard, from its path (results/<stage>/[<subset>/]<shard>.parquet).
_SUBSET_SQL = r"regexp_extract(filename, '([^/\\]+)[/\\][^/\\]+$', 1)"
_SHARD_SQL = r"regexp_extract(filename, '([^/\\]+)\.parquet$', 1)"


class ExploreError(ValueError):
    """A request or an outputs folder the explorer cannot serve; the message says what to do."""


@dataclass(frozen=True)
class Facet:
    param: str  # URL parameter
    label: str
    column: str  # column of the samples table


FACETS: tuple[Facet, ...] = (
    Facet("subset", "subset", "subset"),
    Facet("category", "category", "category"),
    Facet("subcategory", "sub-category", "subcategory"),
    Facet("style", "style", "style"),
    Facet("task", "task", "task_label"),
    Facet("generator", "image generator", "image_generator"),
    Facet("aspect", "aspect ratio", "image_aspect_ratio"),
    Facet("prompt_used", "prompt used", "prompt_used"),
)
FACET_BY_PARAM = {f.param: f for f in FACETS}
ORDERS = {"": "rid", "score": "score DESC NULLS LAST, rid", "-score": "score ASC NULLS LAST, rid"}


def _number(params: Mapping[str, str], key: str) -> float | None:
    raw = (params.get(key) or "").strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise ExploreError(f"{key}={raw!r} is not a number") from None


@dataclass(frozen=True)
class Query:
    """The grid's filters, as they travel in the URL."""

    facets: tuple[tuple[str, str], ...] = ()  # (param, value), sorted
    text: str = ""
    min_score: float | None = None
    max_score: float | None = None
    order: str = ""
    page: int = 0

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> Query:
        facets = tuple(sorted((k, v) for k, v in params.items() if k in FACET_BY_PARAM and v != ""))
        order = params.get("order", "")
        if order not in ORDERS:
            raise ExploreError(f"order={order!r}: expected one of {sorted(ORDERS)}")
        try:
            page = max(0, int(params.get("page") or 0))
        except ValueError:
            raise ExploreError(f"page={params.get('page')!r} is not a page number") from None
        return cls(facets, (params.get("q") or "").strip(), _number(params, "min_score"),
                   _number(params, "max_score"), order, page)

    def params(self, **changes: Any) -> dict[str, str]:
        """URL parameters of this query with ``changes`` applied (None or "" removes a parameter)."""
        out: dict[str, Any] = dict(self.facets)
        out.update({"q": self.text, "min_score": self.min_score, "max_score": self.max_score,
                    "order": self.order, "page": self.page or None})
        out.update(changes)
        return {k: str(v) for k, v in out.items() if v not in (None, "")}

    def value(self, param: str) -> str:
        return dict(self.facets).get(param, "")


@dataclass
class SamplePage:
    total: int
    rows: list[dict[str, Any]]
    facet_counts: dict[str, list[tuple[str, int]]]  # param -> [(value, count)], most first
    page: int
    pages: int


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


def _esc(path: Path) -> str:
    return str(path).replace("'", "''")


def _files_sql(paths: Sequence[Path]) -> str:
    return "[" + ", ".join(f"'{_esc(p)}'" for p in paths) + "]"


class Catalog:
    """A run's outputs (``results_dir``), queryable. One per server; thread-safe (a cursor per query)."""

    def __init__(self, results_dir: str | os.PathLike[str], cache_dir: str | os.PathLike[str]) -> None:
        import duckdb

        self.root = Path(results_dir).resolve()
        if not self.root.is_dir():
            raise ExploreError(f"{results_dir}: no such folder; give the results folder of a run "
                               f"(the one holding dataset/ and the stage folders)")
        self.cache = Path(cache_dir)
        self.cache.mkdir(parents=True, exist_ok=True)
        self.index_files = sorted(self.root.glob(INDEX_GLOB))
        self._lock = threading.Lock()
        self._describe: dict[tuple[str, ...], list[str]] = {}
        self._tables: dict[str, list[Path]] = {}
        self._funnel: list[Any] | None = None
        self._reasons: dict[str, list[dict[str, Any]]] = {}
        self._counts: dict[tuple[Any, ...], tuple[int, dict[str, list[tuple[str, int]]]]] = {}
        self.con = duckdb.connect(str(self._samples_db()), read_only=True)
        self.subset_codes = sorted({f for f in self._scalar_list("SELECT DISTINCT subset FROM samples") if f})

    # ------------------------------------------------------------------------------------------------------
    # Loading

    def _samples_db(self) -> Path:
        h = hashlib.sha256(str(self.root).encode())
        for p in self.index_files:
            st = p.stat()
            h.update(f"{p.relative_to(self.root)} {st.st_size} {st.st_mtime_ns}\n".encode())
        db = self.cache / f"samples-{h.hexdigest()[:16]}.duckdb"
        if not db.exists():
            self._build(db)
        return db

    def _build(self, db: Path) -> None:
        import duckdb

        tmp = db.with_name(f".{db.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        con = duckdb.connect(str(tmp))
        try:
            if not self.index_files:
                log.warning("%s: no release index (%s); the grid will be empty", self.root, INDEX_GLOB)
                con.execute("CREATE TABLE samples (rid BIGINT, folder VARCHAR, tar VARCHAR, row BIGINT, "
                            "id VARCHAR, subset VARCHAR, prompt VARCHAR, enhanced_prompt VARCHAR, text VARCHAR, "
                            "category VARCHAR, subcategory VARCHAR, style VARCHAR, task_label VARCHAR, "
                            "image_generator VARCHAR, image_aspect_ratio VARCHAR, prompt_used VARCHAR, "
                            "score DOUBLE, jpg_offset BIGINT, jpg_size BIGINT)")
            else:
                con.execute(f"CREATE TABLE samples AS {self._samples_select(con)}")
            con.close()
            os.replace(tmp, db)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("explore: %d index files loaded into %s", len(self.index_files), db)

    def _samples_select(self, con: Any) -> str:
        src = f"read_parquet({_files_sql(self.index_files)}, filename=true, file_row_number=true, union_by_name=true)"
        names = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}

        def col(name: str, sql_type: str) -> str:
            return name if name in names else f"NULL::{sql_type}"

        folder = r"regexp_extract(filename, '([^/\\]+)[/\\][^/\\]+$', 1)"
        by_folder = " ".join(f"WHEN '{f}' THEN '{s}'" for f, s in release.FOLDERS.items())
        task = col("task", "VARCHAR[]")
        return f"""
            SELECT row_number() OVER (ORDER BY filename, file_row_number) AS rid,
                   {folder} AS folder,
                   regexp_extract(filename, '([^/\\\\]+)\\.parquet$', 1) || '.tar' AS tar,
                   file_row_number AS row, id,
                   coalesce({col('subset', 'VARCHAR')}, CASE {folder} {by_folder} END) AS subset,
                   prompt, {col('enhanced_prompt', 'VARCHAR')} AS enhanced_prompt,
                   array_to_string(list_distinct(string_split_regex(lower(coalesce(prompt, '') || ' ' ||
                       coalesce({col('enhanced_prompt', 'VARCHAR')}, '')), '\\s+')), ' ') AS text,
                   trim(split_part({col('prompt_category', 'VARCHAR')}, ':', 1)) AS category,
                   {col('subcategory', 'VARCHAR')} AS subcategory, {col('style', 'VARCHAR')} AS style,
                   CASE WHEN {task} IS NULL OR len({task}) = 0 THEN 'Not Specified'
                        ELSE array_to_string({task}, ' + ') END AS task_label,
                   {col('image_generator', 'VARCHAR')} AS image_generator,
                   {col('image_aspect_ratio', 'VARCHAR')} AS image_aspect_ratio,
                   CASE WHEN {col('image_generated_with_enhanced_prompt', 'BOOLEAN')} THEN 'enhanced'
                        ELSE 'original' END AS prompt_used,
                   {col('aesthetic_predictor_v_2_5_score', 'DOUBLE')} AS score,
                   {col('jpg_offset', 'BIGINT')} AS jpg_offset, {col('jpg_size', 'BIGINT')} AS jpg_size
            FROM {src}
            ORDER BY rid"""

    def _cursor(self) -> Any:
        with self._lock:
            return self.con.cursor()

    def _scalar_list(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return [r[0] for r in self._cursor().execute(sql, list(args)).fetchall()]

    # ------------------------------------------------------------------------------------------------------
    # Samples

    @staticmethod
    def _where(q: Query, facets: bool = True) -> tuple[str, list[Any]]:
        clauses, args = [], []
        for param, value in q.facets if facets else ():
            clauses.append(f"{FACET_BY_PARAM[param].column} = ?")
            args.append(value)
        for word in q.text.lower().split():
            clauses.append("contains(text, ?)")
            args.append(word)
        if q.min_score is not None:
            clauses.append("score >= ?")
            args.append(q.min_score)
        if q.max_score is not None:
            clauses.append("score <= ?")
            args.append(q.max_score)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def facet_counts(self, q: Query) -> tuple[int, dict[str, list[tuple[str, int]]]]:
        """:meth:`count_facets`, remembered for the last queries (paging through one result counts it once)."""
        hit = self._cached_counts(q)
        if hit is None:
            total, counts, _ = self.count_facets(q)
            hit = self._remember(q, total, counts)
        return hit

    @staticmethod
    def _count_key(q: Query) -> tuple[Any, ...]:
        return (q.facets, q.text.lower(), q.min_score, q.max_score)

    def _cached_counts(self, q: Query) -> tuple[int, dict[str, list[tuple[str, int]]]] | None:
        with self._lock:
            return self._counts.get(self._count_key(q))

    def _remember(self, q: Query, total: int, counts: dict[str, list[tuple[str, int]]]
                  ) -> tuple[int, dict[str, list[tuple[str, int]]]]:
        with self._lock:
            self._counts[self._count_key(q)] = (total, counts)
            while len(self._counts) > 256:
                self._counts.pop(next(iter(self._counts)))
        return total, counts

    def count_facets(self, q: Query, page_size: int | None = None
                     ) -> tuple[int, dict[str, list[tuple[str, int]]], list[int]]:
        """The number of samples matching ``q``, and per facet the count of each value. A facet the query sets is
        counted without its own filter (the values it could switch to), the others with every filter.

        One statement, one pass over ``samples``: the rows that match the search and score filters and all but
        at most one facet filter are kept (``m``, small once a filter is set), each with a 0/1 column per set
        facet; every count is then a GROUP BY over ``m``."""
        where, args = self._where(q, facets=False)
        active = [(FACET_BY_PARAM[p], v) for p, v in q.facets]
        k = len(active)
        flags = ", ".join(f"({f.column} = ?)::INT AS _f{i}" for i, (f, _) in enumerate(active))
        flag_args = [v for _, v in active]
        hits = " + ".join(f"_f{i}" for i in range(k)) or "0"
        cols = ", ".join(f.column for f in FACETS)
        if k > 1:
            # Only rows within one facet of the query can count; test that before the text search. Written as a
            # CASE because DuckDB would otherwise push the search into the scan and run it on every row first
            # (1M rows: 1.9 s of the 2 s such a query took under load).
            near = " OR ".join("(" + " AND ".join(f"{f.column} = ?" for j, (f, _) in enumerate(active) if j != i)
                               + ")" for i in range(k))
            near_args = [v for i in range(k) for j, (_, v) in enumerate(active) if j != i]
            rest = where.removeprefix(" WHERE ") or "TRUE"
            where = f" WHERE CASE WHEN {near} THEN {rest} ELSE FALSE END"
            args = [*near_args, *args]
        parts = [f"SELECT '' AS facet, NULL AS value, count(*) AS n FROM m WHERE {hits} = {k}"]
        for f in FACETS:
            i = next((i for i, (a, _) in enumerate(active) if a.param == f.param), None)
            cond = f"{hits} = {k}" if i is None else f"{hits} - _f{i} = {k - 1}"
            parts.append(f"SELECT '{f.param}', {f.column}::VARCHAR, count(*) FROM m WHERE {cond} "
                         f"AND {f.column} IS NOT NULL GROUP BY {f.column}")
        if page_size is not None:  # the page's rows come from the same pass: the search runs once a request
            parts.append(f"SELECT '#page', rid::VARCHAR, 0 FROM (SELECT rid FROM m WHERE {hits} = {k} "
                         f"ORDER BY {ORDERS[q.order]} LIMIT {int(page_size)} OFFSET {int(q.page * page_size)})")
        sql = (f"WITH m AS MATERIALIZED (SELECT rid, score, {cols}{', ' + flags if flags else ''} "
               f"FROM samples{where}) " + " UNION ALL ".join(parts))
        counts: dict[str, list[tuple[str, int]]] = {f.param: [] for f in FACETS}
        total, page = 0, []
        for facet, value, n in self._cursor().execute(sql, [*flag_args, *args]).fetchall():
            if facet == "":
                total = n
            elif facet == "#page":
                page.append(int(value))
            else:
                counts[facet].append((value, n))
        for v in counts.values():
            v.sort(key=lambda x: (-x[1], x[0]))
        return total, counts, page

    def samples(self, q: Query, page_size: int = PAGE_SIZE) -> SamplePage:
        """One page of the grid: its rows and every facet's counts (one pass over the table when the counts of
        this query are not remembered yet, else one for the page)."""
        cached = self._cached_counts(q)
        if cached is None:
            total, counts, rids = self.count_facets(q, page_size)
            self._remember(q, total, counts)
        else:
            (total, counts), (where, args) = cached, self._where(q)
            rids = self._scalar_list(f"SELECT rid FROM samples{where} ORDER BY {ORDERS[q.order]} LIMIT ? OFFSET ?",
                                     [*args, page_size, q.page * page_size])
        cur = self._cursor().execute(
            f"SELECT {self._ROW_COLUMNS} FROM samples WHERE list_contains(?, rid) ORDER BY {ORDERS[q.order]}",
            [rids])
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        return SamplePage(total, rows, counts, q.page, max(1, -(-total // page_size)))

    _ROW_COLUMNS = ("rid, folder, id, subset, prompt, enhanced_prompt, prompt_used, score, category, subcategory, "
                    "style, task_label, image_generator, image_aspect_ratio")

    def sampled(self, per_value: int) -> list[dict[str, Any]]:
        """Up to ``per_value`` samples (the first in tar order) for each value of each facet, as grid rows: the
        static export's selection, so that every facet value has samples to show."""
        parts = " UNION ".join(
            f"SELECT rid FROM (SELECT rid, row_number() OVER (PARTITION BY {f.column} ORDER BY rid) AS n "
            f"FROM samples WHERE {f.column} IS NOT NULL) WHERE n <= {int(per_value)}" for f in FACETS)
        cur = self._cursor().execute(
            f"SELECT {self._ROW_COLUMNS} FROM samples WHERE rid IN ({parts}) ORDER BY rid")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def locate(self, folder: str, key: str) -> dict[str, Any] | None:
        """Where a sample lies: its index file, row, tar and the image's offset and size (None if unknown)."""
        cur = self._cursor().execute(
            "SELECT folder, tar, row, jpg_offset, jpg_size, prompt FROM samples WHERE folder = ? AND id = ?",
            [folder, key])
        r = cur.fetchone()
        if r is None:
            return None
        return dict(zip(["folder", "tar", "row", "jpg_offset", "jpg_size", "prompt"], r, strict=True))

    def sample(self, folder: str, key: str) -> dict[str, Any] | None:
        """One sample's every field: its index row (provenance parsed), and the other subsets it is in."""
        import pyarrow.parquet as pq

        where = self.locate(folder, key)
        if where is None:
            return None
        index = self.root / "dataset" / folder / where["tar"].replace(".tar", ".parquet")
        pf = pq.ParquetFile(index)
        row, start = where["row"], 0
        for g in range(pf.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if row < start + n:
                record = pf.read_row_group(g).slice(row - start, 1).to_pylist()[0]
                break
            start += n
        else:
            raise ExploreError(f"{index}: has no row {row}; the index changed since the explorer started: "
                               f"restart it")
        provenance = record.pop("provenance", None)
        try:
            parsed = json.loads(provenance) if provenance else {}
        except ValueError:
            parsed = {"provenance (not JSON)": provenance}
        others = self._cursor().execute(
            "SELECT folder, subset FROM samples WHERE id = ? AND folder <> ? ORDER BY folder", [key, folder]
        ).fetchall()
        return {"folder": folder, "tar": where["tar"], "row": row, "record": record,
                "provenance": parsed if isinstance(parsed, dict) else {"provenance": parsed},
                "others": [{"folder": f, "subset": s} for f, s in others]}

    # ------------------------------------------------------------------------------------------------------
    # Stages: the funnel and the dropped records

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

    def drop_reasons(self, stage: str) -> list[dict[str, Any]]:
        """Per (subset, reason), how many records the stage dropped (counted once: a finished run's tables)."""
        if stage not in self._reasons:
            st = pipeline.BY_NAME[stage]
            files = self.stage_tables(stage)
            if not files:
                raise ExploreError(f"{self.root / stage}: no record table of stage {stage!r} (has it run?)")
            src = f"read_parquet({_files_sql(files)}, union_by_name=true, filename=true)"
            sub = _SUBSET_SQL if st.per_subset else "NULL::VARCHAR"
            self._reasons[stage] = [{"subset": s, "reason": r, "count": n} for s, r, n in self._cursor().execute(
                f"SELECT {sub} AS s, drop_reason, count(*) FROM {src} WHERE NOT kept GROUP BY ALL ORDER BY 1, 3 DESC"
            ).fetchall()]
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
        src = f"read_parquet({_files_sql(files)}, union_by_name=true, filename=true)"
        picked = self._cursor().execute(
            f"SELECT filename, id FROM {src} WHERE {cond} ORDER BY filename, id LIMIT ? OFFSET ?",
            [*args, page_size, page * page_size]).fetchall()
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


# Shown first for every dropped record when its table has them: what the record was and its score.
SHOWN_FIRST = ("prompt", "enhanced_prompt", "aesthetic_predictor_v_2_5_score", "source", "locator")


def safe_id(value: str) -> bool:
    return bool(_SAFE_ID.match(value))
