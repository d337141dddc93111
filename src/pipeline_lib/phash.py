"""Perceptual hashes and the near-duplicate search of ingest.

Why not the usual 64-bit pHash (e.g. the ``imagehash`` package): chip images are all the
same product. Their lowest 8x8 DCT frequencies encode the shared layout, so two *different*
built-in chips are often 2-4 bits apart, as close as a JPEG re-encode of one chip is to
itself. This hash keeps the pHash recipe (grey, resize, DCT, threshold) with three changes
measured on the built-in data (bench/ingest/README.md):

* 12x12 low frequencies of a 64x64 Lanczos resize (143 bits once the DC term is dropped);
  a box resize changed the coefficients of a half-size copy as much as a different chip;
* the AC block is divided by its L2 norm (brightness and contrast changes cancel);
* each coefficient is thresholded at its **median over the data set**, not over the image,
  so every bit splits the data set in half and encodes how this chip differs from the
  others, not the layout they share. Hashes therefore depend on the whole data set; they
  are a tool of ingest, not stored in the manifest.

Flips and rotations need no re-hashing: flipping an image negates its odd DCT frequencies
along that axis and transposing it transposes the block, so the 8 flipped/rotated versions
of every hash come from the block alone (:data:`TRANSFORMS`).

The search (:func:`near_duplicate_pairs`) is exact for Hamming distance ``<= t`` and
avoids the n^2 comparison: the bits are dealt into ``t + 1`` interleaved substrings, and by
the pigeonhole principle two hashes within ``t`` bits agree exactly on at least one of them.
Only pairs that share a substring value are compared (numpy: sort, searchsorted, popcount).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

RESIZE = 64
FREQS = 12
BITS = FREQS * FREQS - 1  # the DC coefficient (brightness) is dropped
MAX_DISTANCE = 16  # beyond this, distinct built-in chips match (and the index stops pruning)
_WORDS = -(-BITS // 64)
# Names of PIL.Image.Transpose operations: variant v of image b is ``b.transpose(TRANSFORMS[v])``.
TRANSFORMS = (
    "none", "FLIP_LEFT_RIGHT", "FLIP_TOP_BOTTOM", "ROTATE_180",
    "TRANSPOSE", "ROTATE_270", "ROTATE_90", "TRANSVERSE",
)
PAIR_COLUMNS = ("a", "b", "distance", "transform")
_CHUNK_PAIRS = 2_000_000  # candidate pairs compared per numpy step (bounds memory)


def _dct_basis(n: int, k: int) -> np.ndarray:
    """The first ``k`` rows of the orthonormal DCT-II matrix of size ``n``."""
    x = np.arange(n)
    basis = np.cos(np.pi * (2 * x + 1) * np.arange(k)[:, None] / (2 * n)) * np.sqrt(2 / n)
    basis[0] /= np.sqrt(2)
    return basis


_BASIS = _dct_basis(RESIZE, FREQS)


def dct_block(img: Image.Image) -> np.ndarray:
    """The image's low-frequency DCT block (FREQS x FREQS float32): grey, 64x64 Lanczos,
    DC set to 0, divided by its L2 norm (a flat image gives zeros)."""
    small = img.convert("F").resize((RESIZE, RESIZE), Image.Resampling.LANCZOS)
    block = _BASIS @ np.asarray(small, dtype=np.float64) @ _BASIS.T
    block[0, 0] = 0.0
    norm = float(np.linalg.norm(block))
    return (block / norm if norm > 0 else block).astype(np.float32)


def _variants(blocks: np.ndarray, flips: bool) -> np.ndarray:
    """(n, F, F) -> (n, V, F, F): the blocks of the flipped/rotated images (V = 8) in the
    order of TRANSFORMS, or the blocks alone (V = 1)."""
    if not flips:
        return blocks[:, None]
    odd = (-1.0) ** np.arange(FREQS, dtype=np.float32)
    out = []
    for transposed in (blocks, np.swapaxes(blocks, 1, 2)):
        for rows in (1.0, odd[:, None]):  # negated odd vertical frequencies: vertical flip
            for cols in (1.0, odd[None, :]):  # negated odd horizontal frequencies: mirror
                out.append(transposed * rows * cols)
    return np.stack(out, axis=1)


def hash_bits(blocks: np.ndarray, center: np.ndarray, *, flips: bool) -> np.ndarray:
    """Boolean hashes (n, V, BITS): coefficient above the data set's median ``center``."""
    signs = _variants(np.asarray(blocks, dtype=np.float32), flips) > center
    return signs.reshape(len(blocks), signs.shape[1], FREQS * FREQS)[..., 1:]


def _pack(bits: np.ndarray) -> np.ndarray:
    """(..., BITS) bool -> (..., _WORDS) uint64 for popcounts."""
    padded = np.zeros((*bits.shape[:-1], _WORDS * 64), dtype=bool)
    padded[..., :BITS] = bits
    return np.packbits(padded, axis=-1).view(np.uint64)


def _substring_keys(bits: np.ndarray, parts: int) -> np.ndarray:
    """(..., BITS) -> (..., parts) int64: bit k goes to substring k % parts (interleaved:
    neighbouring frequencies, the most correlated bits, land in different substrings)."""
    keys = np.zeros((*bits.shape[:-1], parts), dtype=np.int64)
    for part in range(parts):
        sub = bits[..., part::parts].astype(np.int64)
        keys[..., part] = sub @ (np.int64(1) << np.arange(sub.shape[-1], dtype=np.int64))
    return keys


def _candidates(query: np.ndarray, table: np.ndarray):
    """Yield (query index, table index) arrays of all equal-key pairs, in bounded chunks."""
    order = np.argsort(table, kind="stable")
    ordered = table[order]
    lo = np.searchsorted(ordered, query, side="left")
    counts = np.searchsorted(ordered, query, side="right") - lo
    ends = np.cumsum(counts)
    start = 0
    while start < len(query):
        # as many queries as keep this step under _CHUNK_PAIRS pairs (at least one)
        base = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, base + _CHUNK_PAIRS, side="right")))
        n = counts[start:stop]
        qi = np.repeat(np.arange(start, stop), n)
        offsets = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        yield qi, order[lo[qi] + offsets]
        start = stop


def near_duplicate_pairs(
    blocks: np.ndarray, is_test: np.ndarray, *, max_distance: int, flips: bool = True
) -> pd.DataFrame:
    """Pairs ``a < b`` (row indices of ``blocks``) whose hashes are within ``max_distance``
    bits, where ``b`` may be flipped/rotated (``flips``); pairs of two test rows are left out
    (no leakage). Columns :data:`PAIR_COLUMNS`; ``transform`` names the ``PIL.Image.Transpose``
    that turns image b into the look-alike of image a. Sorted by (a, b)."""
    if not 0 <= max_distance <= MAX_DISTANCE:
        raise ValueError(f"max_distance {max_distance} outside 0..{MAX_DISTANCE}")
    blocks = np.asarray(blocks, dtype=np.float32)
    n = len(blocks)
    is_test = np.asarray(is_test, dtype=bool)
    empty = pd.DataFrame({"a": [], "b": [], "distance": [], "transform": []}).astype(
        {"a": np.int64, "b": np.int64, "distance": np.int64, "transform": object}
    )
    if n < 2:
        return empty
    bits = hash_bits(blocks, np.median(blocks, axis=0), flips=flips)  # (n, V, BITS)
    n_var = bits.shape[1]
    packed = _pack(bits)  # (n, V, W)
    parts = max_distance + 1
    keys = _substring_keys(bits, parts)  # (n, V, parts)
    found = []
    for part in range(parts):
        for qi, ti in _candidates(keys[:, 0, part], keys[:, :, part].reshape(-1)):
            b, v = ti // n_var, ti % n_var
            keep = (b > qi) & ~(is_test[qi] & is_test[b])
            qi, b, v = qi[keep], b[keep], v[keep]
            dist = np.bitwise_count(packed[qi, 0] ^ packed[b, v]).sum(axis=-1, dtype=np.int64)
            close = dist <= max_distance
            found.append(np.stack([qi[close], b[close], dist[close], v[close]], axis=1))
    if not found or not sum(len(f) for f in found):
        return empty
    rows = np.concatenate(found)
    # one row per pair: the smallest distance, then the first transform in TRANSFORMS order
    rows = rows[np.lexsort((rows[:, 3], rows[:, 2], rows[:, 1], rows[:, 0]))]
    first = np.ones(len(rows), dtype=bool)
    first[1:] = (rows[1:, 0] != rows[:-1, 0]) | (rows[1:, 1] != rows[:-1, 1])
    rows = rows[first]
    return pd.DataFrame(
        {
            "a": rows[:, 0],
            "b": rows[:, 1],
            "distance": rows[:, 2],
            "transform": [TRANSFORMS[v] for v in rows[:, 3]],
        }
    )
