"""Perceptual hashes and the near-duplicate search of ingest.

Why not the usual 64-bit pHash (e.g. the ``imagehash`` package): chip images are all the
same product. Their lowest 8x8 DCT frequencies encode the shared layout, so two *different*
built-in chips are often 2-4 bits apart, as close as a JPEG re-encode of one chip is to
itself. This hash keeps the pHash recipe (grey, resize, DCT, threshold) with three changes
measured on the built-in data (bench/ingest/README.md):

* the 12x12 lowest DCT frequencies (143 bits once the DC term is dropped), computed on the
  full image (:func:`dct_block`: no resize, so no resampling filter in the way);
* the AC block is divided by its L2 norm (brightness and contrast changes cancel);
* each coefficient is thresholded at its **median over the data set**, not over the image,
  so every bit splits the data set in half and encodes how this chip differs from the
  others, not the layout they share. Hashes therefore depend on the whole data set; they
  are a tool of ingest, not stored in the manifest.

Flips and rotations need no re-hashing: flipping an image negates its odd DCT frequencies
along that axis and transposing it transposes the block, so the 8 flipped/rotated versions
of every hash come from the block alone (:data:`TRANSFORMS`).

The search (:func:`near_duplicate_pairs`) is exact for Hamming distance ``<= t`` and
avoids the n^2 comparison (multi-index hashing): the bits are dealt into ``m = t // 2 + 1``
interleaved substrings (at least 3), and by the pigeonhole principle two hashes within
``t`` bits differ in at most one bit of at least one substring. Only pairs whose substring
values are equal or one bit apart are compared (numpy: sort, searchsorted, popcount), in
chunks of bounded size.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

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


@lru_cache(maxsize=128)
def _dct_basis(n: int) -> np.ndarray:
    """The first FREQS rows of the orthonormal DCT-II matrix of size ``n`` (float32)."""
    x = np.arange(n)
    basis = np.cos(np.pi * (2 * x + 1) * np.arange(FREQS)[:, None] / (2 * n)) * np.sqrt(2 / n)
    basis[0] /= np.sqrt(2)
    return basis.astype(np.float32)


_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as Pillow's "L"


def grey(pixels: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) pixels as (H, W) float32 grey."""
    pixels = np.asarray(pixels)
    return pixels.astype(np.float32) if pixels.ndim == 2 else pixels[..., :3].astype(np.float32) @ _LUMA


def dct_block(grey_pixels: np.ndarray) -> np.ndarray:
    """The lowest FREQS x FREQS DCT coefficients of a (H, W) grey image, DC set to 0, divided
    by their L2 norm (a flat image gives zeros).

    Computed on the full image, without resizing it: coefficient k of an n-point DCT-II is
    the image's content at k half-cycles across it, whatever n is, and the common scale
    goes with the normalisation. So a resized copy has (nearly) the same block, and no
    resampling filter adds its own aliasing (a box resize did: bench/ingest/README.md).
    """
    x = np.asarray(grey_pixels, dtype=np.float32)
    block = (_dct_basis(x.shape[0]) @ x @ _dct_basis(x.shape[1]).T).astype(np.float64)
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


def _probes(keys: np.ndarray, radius: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(probe keys, owner row): each key, and with ``radius`` 1 also the key with one of its
    ``width`` bits flipped."""
    owners = np.arange(len(keys))
    if radius == 0:
        return keys, owners
    flipped = keys[None, :] ^ (np.int64(1) << np.arange(width, dtype=np.int64))[:, None]
    return np.concatenate([keys, flipped.reshape(-1)]), np.tile(owners, width + 1)


def _candidates(probes: np.ndarray, owners: np.ndarray, table: np.ndarray):
    """Yield (owner row, table index) arrays of all probe/table pairs with equal keys, in
    chunks of about _CHUNK_PAIRS pairs (bounded memory whatever the data)."""
    order = np.argsort(table, kind="stable")
    ordered = table[order]
    lo = np.searchsorted(ordered, probes, side="left")
    counts = np.searchsorted(ordered, probes, side="right") - lo
    hit = np.flatnonzero(counts)
    lo, counts, owners = lo[hit], counts[hit], owners[hit]
    ends = np.cumsum(counts)
    start = 0
    while start < len(hit):
        base = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, base + _CHUNK_PAIRS, side="right")))
        n = counts[start:stop]
        at = np.repeat(np.arange(start, stop), n)
        offsets = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        yield owners[at], order[lo[at] + offsets]
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
    # m substrings: two hashes within t bits differ in at most t // m bits of one of them;
    # t // m <= 1, so probing each key and its one-bit neighbours finds every such pair
    parts = max(3, max_distance // 2 + 1)
    radius = max_distance // parts
    keys = _substring_keys(bits, parts)  # (n, V, parts)
    found = []
    for part in range(parts):
        probes, owners = _probes(keys[:, 0, part], radius, len(range(part, BITS, parts)))
        for qi, ti in _candidates(probes, owners, keys[:, :, part].reshape(-1)):
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
