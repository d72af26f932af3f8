"""The explorer's catalog of a run's outputs, as DuckDB queries over its parquet files: :class:`Catalog` and the
release's samples (this module), what each stage dropped (:mod:`finet2i.explore.dropped`, mixed into the
catalog), and the grid's filters as they travel in the URL (:mod:`finet2i.explore.query`).

**Samples.** Every release index (``results/dataset/<folder>/train-NNNNNN.parquet``, one row per sample in tar
order) is loaded once into a DuckDB table ``samples`` with the columns the grid filters, searches and shows
(prompts, facets, score, where the image lies in the tar); provenance stays in the parquet files and is read for
one sample when its detail view opens (one row group of one index). The table lives in a DuckDB file in the
cache folder, keyed by the indexes' names, sizes and mtimes: the next start on the same outputs opens it
instead of reading the indexes again (at 6M samples reading them takes minutes; opening the file, a moment).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finet2i.explore.dropped import DroppedRecords
from finet2i.explore.query import FACET_BY_PARAM, FACETS, ORDERS, BrokenIndex, ExploreError, Query, _files_sql
from finet2i.release import layout as release

log = logging.getLogger(__name__)

PAGE_SIZE = 48
INDEX_GLOB = "dataset/*/train-*.parquet"


@dataclass
class SamplePage:
    total: int
    rows: list[dict[str, Any]]
    facet_counts: dict[str, list[tuple[str, int]]]  # param -> [(value, count)], most first
    page: int
    pages: int


class Catalog(DroppedRecords):
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
        import pyarrow as pa
        import pyarrow.parquet as pq

        where = self.locate(folder, key)
        if where is None:
            return None

        index = self.root / "dataset" / folder / where["tar"].replace(".tar", ".parquet")
        row, start = where["row"], 0
        try:
            pf = pq.ParquetFile(index)
            for g in range(pf.num_row_groups):
                n = pf.metadata.row_group(g).num_rows
                if row < start + n:
                    record = pf.read_row_group(g).slice(row - start, 1).to_pylist()[0]
                    break
                start += n
            else:
                record = None
        except (OSError, pa.ArrowException) as e:
            raise BrokenIndex(f"{index}: cannot be read ({e}); the index changed since the explorer started: "
                              f"restart it") from None
        if record is None:
            raise BrokenIndex(f"{index}: has no row {row}; the index changed since the explorer started: "
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
