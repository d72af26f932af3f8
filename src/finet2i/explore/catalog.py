"""The explorer's catalog of a run's outputs, as DuckDB queries over its parquet files: :class:`Catalog` and the
release's samples (this module), what each stage dropped (:mod:`finet2i.explore.dropped`, mixed into the
catalog), and the grid's filters as they travel in the URL (:mod:`finet2i.explore.query`).

**Samples.** Every release index (``results/dataset/<folder>/train-NNNNNN.parquet``, one row per sample in tar
order) is loaded once into a DuckDB table ``samples`` with the columns the grid filters, searches and shows
(prompts, facets, score, where the image lies in the tar); provenance stays in the parquet files and is read for
one sample when its detail view opens (one row group of one index). The table lives in a DuckDB file in the
cache folder, keyed by the indexes' names, sizes and mtimes: the next start on the same outputs opens it
instead of reading the indexes again (at 6M samples reading them takes minutes; opening the file, a moment).

**Made for the release's size** (6.3M samples: benchmarks/explore.py --release). Three more tables are built with
it, so that no request scans every sample's text or facet values: ``facets``, one row per combination of facet
values that occurs (``fcode``, the values, how many samples have it: tens of thousands, where the samples are
millions), with each sample's ``fcode``; ``vocab`` (every distinct lowercased word of the prompts) and
``postings`` (word id, sample rid; sorted by word, so a word's samples are a range). A search word matches the
samples that have a word containing it (as a substring scan of the text did): its vocab entries, then their
postings. The facet counts are sums over the matching combinations, and the detail view finds a sample by its
key through an index.
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
SCHEMA_VERSION = "2: facets, vocab, postings"
POSTINGS_CHUNK = 500_000  # samples whose postings are sorted and written at once
FACET_COLUMNS = ", ".join(f.column for f in FACETS)


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
        h.update(SCHEMA_VERSION.encode())  # a cache built by other code is rebuilt, not misread
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
            con.execute("SET preserve_insertion_order = false")
            # Half the machine's memory at most: the postings of 6M samples are ~400M rows, sorted once (DuckDB
            # spills what does not fit to the cache folder); a shared login node keeps the other half.
            half = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
            con.execute(f"SET memory_limit = '{max(half // 2**20, 1024)}MB'")
            con.execute(f"SET temp_directory = '{self.cache / 'duckdb-tmp'}'")
            if not self.index_files:
                log.warning("%s: no release index (%s); the grid will be empty", self.root, INDEX_GLOB)
                con.execute("CREATE TABLE loaded (rid BIGINT, folder VARCHAR, tar VARCHAR, row BIGINT, "
                            "id VARCHAR, subset VARCHAR, prompt VARCHAR, enhanced_prompt VARCHAR, text VARCHAR, "
                            "category VARCHAR, subcategory VARCHAR, style VARCHAR, task_label VARCHAR, "
                            "image_generator VARCHAR, image_aspect_ratio VARCHAR, prompt_used VARCHAR, "
                            "score DOUBLE, jpg_offset BIGINT, jpg_size BIGINT)")
            else:
                con.execute(f"CREATE TABLE loaded AS {self._samples_select(con)}")
            self._index(con)
            con.close()
            os.replace(tmp, db)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("explore: %d index files loaded into %s", len(self.index_files), db)

    @staticmethod
    def _index(con: Any) -> None:
        """``loaded`` -> ``samples`` (with each sample's facet combination), ``facets``, ``vocab``, ``postings``,
        and an index on the samples' keys. The postings are written POSTINGS_CHUNK samples at a time, each
        chunk sorted by word: a word's postings are then a few ranges, and the build holds one chunk at once
        (6.3M samples make ~400M postings)."""
        same = " AND ".join(f"l.{f.column} IS NOT DISTINCT FROM f.{f.column}" for f in FACETS)
        con.execute(f"CREATE TABLE facets AS SELECT (row_number() OVER (ORDER BY {FACET_COLUMNS}))::INTEGER AS "
                    f"fcode, * FROM (SELECT {FACET_COLUMNS}, count(*) AS n FROM loaded GROUP BY ALL)")
        con.execute(f"CREATE TABLE samples AS SELECT l.* EXCLUDE (text), f.fcode FROM loaded l JOIN facets f "
                    f"ON {same} ORDER BY l.rid")
        con.execute("CREATE TABLE vocab AS SELECT (row_number() OVER (ORDER BY w))::INTEGER AS wid, w AS word "
                    "FROM (SELECT DISTINCT unnest(string_split(text, ' ')) AS w FROM loaded) WHERE w <> ''")
        con.execute("CREATE TABLE postings (wid INTEGER, rid INTEGER, fcode INTEGER)")
        last = con.execute("SELECT coalesce(max(rid), 0) FROM loaded").fetchone()[0]
        for start in range(0, int(last), POSTINGS_CHUNK):
            span = [start, start + POSTINGS_CHUNK]
            con.execute("INSERT INTO postings SELECT v.wid, l.rid::INTEGER, s.fcode FROM (SELECT rid, "
                        "unnest(string_split(text, ' ')) AS w FROM loaded WHERE rid > ? AND rid <= ?) l "
                        "JOIN vocab v ON v.word = l.w JOIN (SELECT rid, fcode FROM samples WHERE rid > ? AND "
                        "rid <= ?) s USING (rid) ORDER BY v.wid, l.rid", [*span, *span])
        con.execute("DROP TABLE loaded")
        con.execute("CREATE INDEX samples_key ON samples (id)")
        con.execute("CHECKPOINT")

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
    def _words(q: Query) -> tuple[str, list[Any]] | None:
        """(rid, fcode) of the samples with a word containing each search word (vocab, then postings), or None."""
        words = q.text.lower().split()
        if not words:
            return None
        one = "SELECT DISTINCT rid, fcode FROM postings WHERE wid IN (SELECT wid FROM vocab WHERE contains(word, ?))"
        return " INTERSECT ".join([one] * len(words)), words

    def _where(self, q: Query, facets: bool = True) -> tuple[str, list[Any]]:
        """The WHERE clause over ``samples`` for ``q``: its facet combinations, search words and score range."""
        clauses, args = [], []
        if facets and q.facets:
            combos = " AND ".join(f"{FACET_BY_PARAM[p].column} = ?" for p, _ in q.facets)
            clauses.append(f"fcode IN (SELECT fcode FROM facets WHERE {combos})")
            args += [v for _, v in q.facets]
        words = self._words(q)
        if words is not None:
            clauses.append(f"rid IN (SELECT rid FROM ({words[0]}))")
            args += words[1]
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

        Counted over facet combinations, not samples: the samples that match the search and score filters are
        grouped by ``fcode`` (or, without such filters, the ``facets`` table's own counts are used), each
        combination gets a 0/1 column per set facet, and every count is a sum over those few rows. With
        ``page_size``, also the rids of the page."""
        words = self._words(q)
        if q.min_score is None and q.max_score is None:  # from the facets table, or the search's postings alone
            base, args = ("SELECT fcode, n FROM facets", []) if words is None else \
                (f"SELECT fcode, count(*) AS n FROM ({words[0]}) GROUP BY fcode", words[1])
        else:
            where, args = self._where(q, facets=False)
            base = f"SELECT fcode, count(*) AS n FROM samples{where} GROUP BY fcode"
        active = [(FACET_BY_PARAM[p], v) for p, v in q.facets]
        k = len(active)
        flags = "".join(f", ({f.column} = ?)::INT AS _f{i}" for i, (f, _) in enumerate(active))
        hits = " + ".join(f"_f{i}" for i in range(k)) or "0"
        parts = [f"SELECT '' AS facet, NULL AS value, sum(n) AS n FROM m WHERE {hits} = {k}"]
        for f in FACETS:
            i = next((i for i, (a, _) in enumerate(active) if a.param == f.param), None)
            cond = f"{hits} = {k}" if i is None else f"{hits} - _f{i} = {k - 1}"
            parts.append(f"SELECT '{f.param}', {f.column}::VARCHAR, sum(n) FROM m WHERE {cond} "
                         f"AND {f.column} IS NOT NULL GROUP BY {f.column}")
        sql = (f"WITH b AS ({base}), m AS MATERIALIZED (SELECT b.n, {', '.join('f.' + f.column for f in FACETS)}"
               f"{flags} FROM b JOIN facets f USING (fcode)) " + " UNION ALL ".join(parts))
        counts: dict[str, list[tuple[str, int]]] = {f.param: [] for f in FACETS}
        total = 0
        for facet, value, n in self._cursor().execute(sql, [*args, *(v for _, v in active)]).fetchall():
            if facet == "":
                total = int(n or 0)
            else:
                counts[facet].append((value, int(n)))
        for v in counts.values():
            v.sort(key=lambda x: (-x[1], x[0]))
        page = self._page(q, page_size) if page_size is not None else []
        return total, counts, page

    def _page(self, q: Query, page_size: int) -> list[int]:
        words = self._words(q)
        if words is not None and not q.order and q.min_score is None and q.max_score is None:
            combos = " AND ".join(f"{FACET_BY_PARAM[p].column} = ?" for p, _ in q.facets) or "TRUE"
            return self._scalar_list(
                f"SELECT rid FROM ({words[0]}) WHERE fcode IN (SELECT fcode FROM facets WHERE {combos}) "
                f"ORDER BY rid LIMIT ? OFFSET ?", [*words[1], *(v for _, v in q.facets), page_size,
                                                   q.page * page_size])
        where, args = self._where(q)
        return self._scalar_list(f"SELECT rid FROM samples{where} ORDER BY {ORDERS[q.order]} LIMIT ? OFFSET ?",
                                 [*args, page_size, q.page * page_size])

    def samples(self, q: Query, page_size: int = PAGE_SIZE) -> SamplePage:
        """One page of the grid: its rows and every facet's counts (one pass over the table when the counts of
        this query are not remembered yet, else one for the page)."""
        cached = self._cached_counts(q)
        if cached is None:
            total, counts, rids = self.count_facets(q, page_size)
            self._remember(q, total, counts)
        else:
            (total, counts), rids = cached, self._page(q, page_size)
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
        # By the key alone, which the index answers (a second condition makes DuckDB scan every row), then the folder.
        cur = self._cursor().execute(
            "SELECT folder, tar, row, jpg_offset, jpg_size, prompt FROM samples WHERE id = ?", [key])
        r = next((r for r in cur.fetchall() if r[0] == folder), None)
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
        others = sorted(r for r in self._cursor().execute(
            "SELECT folder, subset FROM samples WHERE id = ?", [key]).fetchall() if r[0] != folder)
        return {"folder": folder, "tar": where["tar"], "row": row, "record": record,
                "provenance": parsed if isinstance(parsed, dict) else {"provenance": parsed},
                "others": [{"folder": f, "subset": s} for f, s in others]}
