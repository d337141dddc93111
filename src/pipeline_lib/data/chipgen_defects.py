"""The eight defect types of :mod:`pipeline_lib.data.chipgen`.

Each defect draws its own geometry from its own generator and records its effect in
:class:`Effects`: a cut out of the die (chipped edge), removed wire intervals (missing
or broken wire), or an overlay applied to the composited scene (everything else).
``size`` scales the defect's extent; ``contrast`` in (0, 1] scales how far it moves the
pixels from the defect-free chip, so ``contrast -> 0`` gives the defect-free image.

Ground truth: every overlay returns its *footprint*, the coverage of the pixels it
changed (non-zero exactly where it touched the image), and :func:`plan` records which
defect owns which overlay, cut and wire gap (``Effects.owner``), so ``chipgen`` can give
each defect its own box. Computing footprints draws no random numbers: the images stay
the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .chipgen_scene import SHADOW, Canvas, Geometry, composite, ellipse, rot

# (image, die coverage) -> footprint: changes the image in place, returns the coverage it touched
Overlay = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Owned:
    """What one defect changed: its overlays (indices into ``Effects.overlays``), whether
    it cut the die, and the wires it cut gaps into."""

    overlays: list = field(default_factory=list)
    cut: bool = False
    wires: list = field(default_factory=list)


@dataclass
class Effects:
    die_cut: np.ndarray | None = None
    wire_gaps: dict = field(default_factory=dict)
    overlays: list = field(default_factory=list)
    owner: list = field(default_factory=list)  # one Owned per defect, in the order drawn


def _smooth_radii(rng: np.random.Generator, n: int, amount: float) -> np.ndarray:
    """Radii for an irregular blob: circularly smoothed noise around 1."""
    r = rng.standard_normal(n)
    r = (np.roll(r, 1) + 2 * r + np.roll(r, -1)) / 2.45
    return np.clip(1 + amount * r, 0.45, 1.8)


def _thin(cv: Canvas, w: float, size: float) -> float:
    """A line at least ~1 output pixel wide, thickening with sqrt(size)."""
    return max(1.0 / cv.size, w) * np.sqrt(size)


def scratch(rng, cv: Canvas, geo: Geometry, size: float, c: float, fx: Effects) -> None:
    """A thin straight-ish bright (or dark) line across the die, fading at its ends."""
    p = geo.die_point(rng, 0.55)
    phi = rng.uniform(0, np.pi)
    length = rng.uniform(0.55, 1.0) * 2 * geo.half[0] * size
    bend = rng.normal(0, 0.05) * length
    bright = rng.random() < 0.65
    amp = rng.uniform(0.32, 0.45) * c * (1 if bright else -1)
    d = np.array([np.cos(phi), np.sin(phi)])
    perp = np.array([-d[1], d[0]])
    t = np.linspace(-0.5, 0.5, 13)
    pts = p + np.outer(t * length, d) + np.outer((1 - 4 * t * t) * bend, perp)
    profile = np.sqrt(np.sin(np.pi * (t[:-1] + t[1:] + 1) / 2))
    im, dr = cv.new()
    w = cv.width(_thin(cv, 0.007, size))
    for k in range(len(pts) - 1):
        dr.line(cv.pts(pts[k : k + 2]), fill=int(255 * profile[k]), width=w)
    mask = cv.finish(im)

    def overlay(img, die):
        img += (amp * mask * die)[..., None]
        return mask * die

    fx.overlays.append(overlay)


def _walk(rng, start, heading, length, step, wobble):
    n = max(2, int(np.ceil(length / step)))
    headings = heading + np.cumsum(rng.normal(0, wobble, n)) * 0.6
    steps = np.stack([np.cos(headings), np.sin(headings)], 1) * step
    return np.vstack([start, start + np.cumsum(steps, 0)])


def crack(rng, cv: Canvas, geo: Geometry, size: float, c: float, fx: Effects) -> None:
    """A jagged dark line with one or two branches, running in from a die edge."""
    hw, hh = geo.half
    side = rng.integers(4)
    q = rng.uniform(-0.7, 0.7)
    start, inward = [
        ((q * hw, -hh), np.pi / 2),
        ((hw, q * hh), np.pi),
        ((q * hw, hh), -np.pi / 2),
        ((-hw, q * hh), 0.0),
    ][side]
    length = rng.uniform(0.2, 0.34) * size
    main = _walk(rng, np.array(start), inward + rng.normal(0, 0.35), length, 0.012, 0.5)
    lines = [(main, 1.0)]
    for _ in range(rng.integers(1, 3)):
        k = rng.integers(len(main) // 4, max(len(main) * 3 // 4, len(main) // 4 + 1))
        seg = main[min(k + 1, len(main) - 1)] - main[k]
        heading = np.arctan2(seg[1], seg[0]) + rng.choice([-1, 1]) * rng.uniform(0.5, 1.1)
        lines.append((_walk(rng, main[k], heading, length * rng.uniform(0.25, 0.5), 0.01, 0.6), 0.7))
    k_dark = rng.uniform(0.6, 0.8) * c
    im, dr = cv.new()
    for line, wscale in lines:
        dr.line(cv.pts(geo.to_img(line)), fill=255, width=cv.width(_thin(cv, 0.008, size) * wscale), joint="curve")
    mask = cv.finish(im)

    def overlay(img, die):
        img *= (1 - k_dark * mask * die)[..., None]
        return mask * die

    fx.overlays.append(overlay)


def chipped_edge(rng, cv: Canvas, geo: Geometry, size: float, c: float, fx: Effects) -> None:
    """A piece broken off a die corner (or bitten out of an edge), showing the paddle."""
    hw, hh = geo.half
    out = 0.06
    if rng.random() < 0.65:  # corner
        sx, sy = rng.choice([-1.0, 1.0], 2)
        a = min(rng.uniform(0.07, 0.12) * size, 1.6 * hw)
        b = min(rng.uniform(0.07, 0.12) * size, 1.6 * hh)
        p1, p2 = np.array([sx * (hw - a), sy * hh]), np.array([sx * hw, sy * (hh - b)])
        t = np.linspace(0, 1, 7)[1:-1, None]
        jag = np.array([-sx, -sy]) * rng.normal(0, 0.18, (5, 1)) * min(a, b)
        edge = np.vstack([p1, p1 + t * (p2 - p1) + jag, p2])
        local = np.vstack([edge, [(sx * (hw + out), sy * (hh - b)), (sx * (hw + out), sy * (hh + out)), (sx * (hw - a), sy * (hh + out))]])
    else:  # a bite out of one edge, built on the top edge then rotated into place
        side = rng.integers(4)
        half_len = hw if side % 2 == 0 else hh
        half_other = hh if side % 2 == 0 else hw
        a = min(rng.uniform(0.045, 0.08) * size, 0.8 * half_len)
        depth = min(a * rng.uniform(0.5, 0.9), 1.2 * half_other)
        q = rng.uniform(-1, 1) * (half_len - a)
        th = np.linspace(np.pi, 0, 9)
        jitter = 1 + rng.normal(0, 0.15, 9)
        edge = np.stack([q + a * np.cos(th), -half_other + depth * np.sin(th) * jitter], 1)
        local = np.vstack([edge, [(q + a, -half_other - out), (q - a, -half_other - out)]])
        r = rot(side * np.pi / 2)  # top → right → bottom → left edge
        local, edge = local @ r.T, edge @ r.T
    im, dr = cv.new()
    dr.polygon(cv.pts(geo.to_img(local)), fill=255)
    cut = cv.finish(im)
    fx.die_cut = cut if fx.die_cut is None else np.maximum(fx.die_cut, cut)
    im, dr = cv.new()
    dr.line(cv.pts(geo.to_img(edge)), fill=255, width=cv.width(1.0 / cv.size), joint="curve")
    rim = cv.finish(im, blur=0.002)
    k_dark = 0.45 * c

    def overlay(img, die):
        img *= (1 - k_dark * rim)[..., None]
        return rim

    fx.overlays.append(overlay)


_PARTICLE_COLOURS = (
    np.array([0.07, 0.06, 0.05], np.float32),  # dark debris
    np.array([0.93, 0.92, 0.88], np.float32),  # bright flake / solder ball
    np.array([0.48, 0.34, 0.20], np.float32),  # organic / fibre
)


def particle(rng, cv: Canvas, geo: Geometry, size: float, c: float, fx: Effects) -> None:
    """A contamination blob (with a few satellites) on or near the die, with its shadow."""
    if rng.random() < 0.75:
        centre = geo.die_point(rng, 0.9)
    else:
        centre = geo.package + rng.uniform(-1, 1, 2) * (geo.half + 0.04)
    r = rng.uniform(0.016, 0.032) * size
    blobs = [ellipse(centre, r, r * rng.uniform(0.6, 1.0), rng.uniform(0, np.pi), 14, _smooth_radii(rng, 14, 0.35))]
    for _ in range(rng.integers(0, 3)):
        rs = r * rng.uniform(0.25, 0.5)
        off = rng.normal(0, 1.6 * r, 2)
        blobs.append(ellipse(centre + off, rs, rs, 0.0, 10, _smooth_radii(rng, 10, 0.3)))
    colour = _PARTICLE_COLOURS[rng.choice(3, p=[0.55, 0.25, 0.20])]
    colour = colour * (1 + rng.normal(0, 0.05, 3)).astype(np.float32)
    body, dr = cv.new()
    shade, ds = cv.new()
    for poly in blobs:
        dr.polygon(cv.pts(poly), fill=255)
        ds.polygon(cv.pts(poly + (0.004, 0.005)), fill=255)
    mask = cv.finish(body, blur=0.0015)
    shadow = cv.finish(shade, blur=0.004)

    def overlay(img, die):
        composite(img, shadow * (0.4 * c), SHADOW)
        composite(img, mask * (0.95 * c), colour)
        return np.maximum(shadow, mask)

    fx.overlays.append(overlay)


def _pick_wire(rng, geo: Geometry, fx: Effects) -> int:
    free = [i for i in range(len(geo.wires)) if i not in fx.wire_gaps]
    return int(rng.choice(free if free else range(len(geo.wires))))


def missing_wire(rng, cv: Canvas, geo: Geometry, size: float, c: float, fx: Effects) -> None:
    """One bond wire absent (ball and stitch too): a bare pad."""
    fx.wire_gaps[_pick_wire(rng, geo, fx)] = [(0.0, 1.0)]


def broken_wire(rng, cv: Canvas, geo: Geometry, size: float, c: float, fx: Effects) -> None:
    """A bond wire with a gap somewhere along its loop."""
    i = _pick_wire(rng, geo, fx)
    t0 = rng.uniform(0.2, 0.6)
    gap = min(rng.uniform(0.18, 0.3) * size, 0.6)
    fx.wire_gaps[i] = [(t0, min(t0 + gap, 0.92))]


def void(rng, cv: Canvas, geo: Geometry, size: float, c: float, fx: Effects) -> None:
    """A soft round / elliptic lighter region on the die."""
    centre = geo.die_point(rng, 0.6)
    rx = rng.uniform(0.025, 0.05) * size
    poly = ellipse(centre, rx, rx * rng.uniform(0.6, 1.0), rng.uniform(0, np.pi), 24, _smooth_radii(rng, 24, 0.08))
    im, dr = cv.new()
    dr.polygon(cv.pts(poly), fill=255)
    mask = cv.finish(im, blur=0.22 * rx)
    k = rng.uniform(0.3, 0.42) * c

    def overlay(img, die):
        a = (k * mask * die)[..., None]
        img += a * (1 - img)
        return mask * die

    fx.overlays.append(overlay)


_TINTS = (
    np.array([1.00, 0.72, 0.45], np.float32),  # brown / copper oxide
    np.array([0.80, 0.56, 1.00], np.float32),  # purple (oxide interference)
    np.array([0.66, 0.92, 0.66], np.float32),  # green (residue)
    np.array([0.58, 0.56, 0.50], np.float32),  # grey-dark stain
)


def discolouration(rng, cv: Canvas, geo: Geometry, size: float, c: float, fx: Effects) -> None:
    """A stain: a soft irregular tinted patch on the die or on a lead finger."""
    if rng.random() < 0.7:
        centre = geo.die_point(rng, 0.7)
    else:
        lead = geo.leads[rng.integers(len(geo.leads))]
        centre = lead[1:3].mean(0) + (np.sign(lead[0, 0] - lead[1, 0]) * rng.uniform(0.03, 0.1), 0)
    r = rng.uniform(0.045, 0.08) * size
    im, dr = cv.new()
    for _ in range(rng.integers(1, 3)):
        poly = ellipse(centre + rng.normal(0, 0.4 * r, 2), r * rng.uniform(0.6, 1.0), r * rng.uniform(0.5, 0.9),
                       rng.uniform(0, np.pi), 16, _smooth_radii(rng, 16, 0.3))
        dr.polygon(cv.pts(poly), fill=255)
    mask = cv.finish(im, blur=0.3 * r)
    tint = _TINTS[rng.integers(len(_TINTS))]
    k = rng.uniform(0.8, 1.0) * c

    def overlay(img, die):
        img *= 1 - (k * mask)[..., None] * (1 - tint)
        return mask

    fx.overlays.append(overlay)


DRAWERS = {
    "scratch": scratch,
    "crack": crack,
    "chipped_edge": chipped_edge,
    "particle": particle,
    "missing_wire": missing_wire,
    "broken_wire": broken_wire,
    "void": void,
    "discolouration": discolouration,
}


def plan(seed: int, cv: Canvas, geo: Geometry, defects, size: float, contrast: float) -> Effects:
    """Effects of ``defects``; defect k draws from its own stream ``[seed, k]``.

    ``fx.owner[k]`` lists what defect k added. The die cut is one merged map: a defect
    that changed it owns all of it (only ``chipped_edge`` cuts, and a chip's defect types
    are distinct, so in the dataset one defect owns it)."""
    fx = Effects()
    for k, name in enumerate(defects):
        n_overlays, cut_before, gaps_before = len(fx.overlays), fx.die_cut, dict(fx.wire_gaps)
        DRAWERS[name](np.random.default_rng([seed, k]), cv, geo, size, contrast, fx)
        fx.owner.append(Owned(overlays=list(range(n_overlays, len(fx.overlays))),
                              cut=fx.die_cut is not cut_before,
                              wires=sorted(i for i, g in fx.wire_gaps.items() if gaps_before.get(i) is not g)))
    return fx
