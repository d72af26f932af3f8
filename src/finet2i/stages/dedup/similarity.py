"""Pairs above the threshold, exactly: products in a low precision pick candidates (``Matcher``), float64
cosines of the stored float16 vectors decide (``exact_cosines``, ``_exact_pairs``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from finet2i.plumbing.hardware import cpu_has_fast_bf16


class Matcher:
    """Pairs above the threshold, exactly: low-precision products pick candidates, float64 decides."""

    # Bounds on |low-precision cosine - exact cosine| for unit fp16 vectors, 384-d, fp32 accumulation:
    # bf16 inputs and output round at 2^-8 each (<= 0.012 in all); the comparison constant rounds too.
    MARGINS = {"fp32": 1e-4, "fp16": 3e-3, "bf16": 0.025}

    def __init__(self, threshold: float, *, device: str = "auto", precision: str = "auto") -> None:
        import torch

        self.torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if precision == "auto":
            precision = "fp16" if self.device.type == "cuda" else ("bf16" if cpu_has_fast_bf16() else "fp32")
        self.precision = precision
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        self.threshold = float(threshold)
        self.low = self.threshold - self.MARGINS[precision]
        self._int_view = self._low_as_int()
        # Column chunk of one product: 4096 x 8192 bfloat16 (64 MB) stays near the cache-friendly sweet spot
        # measured on 2 cores; 32768 columns made the scans after the product memory-bound. A GPU takes
        # 4096 x 65536 (512 MB) per launch: fewer launches and host syncs (each chunk's nonzero waits).
        self.col_chunk = 65536 if self.device.type == "cuda" else 8192
        self.tile = 64
        # Threads for large products only; everything else runs on one. On a shared machine an OpenMP region
        # waits for its slowest thread: a 1,000 x 384 sum took 19 us on 1 thread and 7.9 ms on 2 while
        # another job held the second core, which made the many small steps of the sweep 6x slower.
        self.threads = torch.get_num_threads()
        self.wide_pairs = 1 << 22

    @contextmanager
    def single_threaded(self) -> Iterator[None]:
        with torch_threads(self.torch, 1):
            yield

    def _low_as_int(self) -> tuple[Any, int] | None:
        """(integer dtype, bit pattern) to scan a product block as integers, or None when ``low`` <= 0.

        Positive IEEE floats order like their bit patterns read as integers, and any negative float reads
        as a negative integer, so ``bits(s) > bits(low')`` finds every ``s > low`` when low > 0, with
        low' <= low the largest representable value not above ``low`` (a few extra candidates, checked in
        float64 anyway). Why: a max-reduction over int16 ran in 15 ms where bfloat16 took 33 ms on a
        4096 x 8192 block (the product itself: 165 ms).
        """
        torch = self.torch
        if self.low <= 0:
            return None
        itype = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}[self.dtype]
        bits = int(torch.tensor([self.low], dtype=self.dtype).view(itype).item())
        while float(torch.tensor([bits], dtype=itype).view(self.dtype).item()) > self.low:
            bits -= 1
        return itype, bits

    def to_device(self, vectors: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(vectors)).to(self.device, self.dtype)

    def candidates(self, q: Any, m: Any, *, upper: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Index pairs (i, j) with approximate q_i . m_j > threshold - margin (j > i only when ``upper``).

        Why tiles: an elementwise ``s > low`` over a bfloat16 block costs a third of the product itself on
        CPUs (it is not vectorised), while a max-reduction is cheap. So the block is reduced to the max of
        every 64-column tile (read as integers, see ``_low_as_int``), only the few tiles whose max clears
        ``low`` are gathered and compared.
        """
        torch = self.torch
        rows: list[Any] = []
        cols: list[Any] = []
        t = self.tile
        if self._int_view is not None:
            itype, low = self._int_view
        else:
            itype, low = None, self.low
        for c0 in range(0, m.shape[0], self.col_chunk):
            mc = m[c0:c0 + self.col_chunk]
            if upper and c0 >= q.shape[0]:
                break  # q is m's prefix here: columns past it cannot be > any row
            wide = self.threads if q.shape[0] * mc.shape[0] >= self.wide_pairs else 1
            with torch_threads(torch, wide):
                s = q @ mc.T
                if itype is not None:
                    s = s.view(itype)
                nc = s.shape[1]
                full = nc - nc % t
                tmax = s[:, :full].reshape(s.shape[0], full // t, t).amax(dim=2) if full else None
            if full:
                tr, tc = (tmax > low).nonzero(as_tuple=True)
                if tr.numel():
                    blk = s[:, :full].reshape(s.shape[0], full // t, t)[tr, tc]  # (k, t)
                    k, j = (blk > low).nonzero(as_tuple=True)
                    rows.append(tr[k])
                    cols.append(tc[k] * t + j + c0)
            if full < nc:
                r, c = (s[:, full:] > low).nonzero(as_tuple=True)
                rows.append(r)
                cols.append(c + full + c0)
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        r = torch.cat(rows).cpu().numpy()
        c = torch.cat(cols).cpu().numpy()
        if upper:
            keep = c > r
            r, c = r[keep], c[keep]
        return r, c


@contextmanager
def torch_threads(torch: Any, n: int) -> Iterator[None]:
    """Run a block with ``n`` torch CPU threads (setting it costs well under a microsecond)."""
    old = torch.get_num_threads()
    if n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def exact_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of stored (unit, float16) vectors, in float64: the value every decision uses."""
    return np.einsum("ij,ij->i", a.astype(np.float64), b.astype(np.float64))


def _exact_pairs(a: Any, ia: np.ndarray, b: Any, ib: np.ndarray, chunk: int = 16384) -> np.ndarray:
    """float64 cosines of rows ``a[ia]`` and ``b[ib]`` (torch, float16 or float64), in chunks (bounded memory).

    Exact whatever the summation order: float16 values are multiples of 2^-24 below 1, so every product and
    partial sum of two unit float16 vectors is a multiple of 2^-48 below ~1, which float64 holds exactly.
    That is why a dense product and a gathered dot product give the same bits, and verdicts never depend on
    the blocking.
    """
    torch = __import__("torch")
    out = np.empty(len(ia), np.float64)
    ta, tb = torch.from_numpy(ia), torch.from_numpy(ib)
    for k in range(0, len(ia), chunk):
        x = a[ta[k:k + chunk]].double()
        y = b[tb[k:k + chunk]].double()
        out[k:k + chunk] = torch.einsum("ij,ij->i", x, y).numpy()
    return out
