"""The check of a tar's sibling parquet index (``train-NNNNNN.parquet``): it lists the tar's samples, one row
each, in tar order, as the tools that seek by row number assume.
"""

from __future__ import annotations

from pathlib import Path

from finet2i.release.validate.report import _Collector, _plural


def _check_index(index: Path, keys: list[str], complete: bool, out: _Collector) -> None:
    """A sibling index must list the tar's samples one row each, in tar order: tools seek by row number.
    When the tar was not read to its end, only the rows of the samples read are compared."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    where = str(index)
    try:
        pf = pq.ParquetFile(index)
        if "id" not in pf.schema_arrow.names:
            out.add("bad_index", where, None, f"{index.name} has no id column (columns: {pf.schema_arrow.names})")
            return
        ids = pf.read(columns=["id"]).column("id").to_pylist()
    except (OSError, pa.ArrowException) as e:
        out.add("bad_index", where, None, f"{index.name} cannot be read: {e}")
        return
    if complete and len(ids) != len(keys):
        out.add("index_mismatch", where, None, f"{index.name} has {_plural(len(ids), 'row')}, the tar "
                                            f"{_plural(len(keys), 'sample')}")
    for i, (row_id, key) in enumerate(zip(ids, keys, strict=False)):
        if row_id != key:
            out.add("index_mismatch", where, key, f"row {i} of {index.name} has id {row_id!r}, sample {i} of the "
                                                  f"tar is {key!r}")
            return
