"""Drawing helpers and the defect-free chip scene for :mod:`pipeline_lib.data.chipgen`.

Coordinates are normalised to the image (0..1, x right, y down). Shapes are drawn with
PIL into supersampled 8-bit masks and box-reduced to anti-aliased coverage in [0, 1];
colours are composited in float32 RGB with numpy. The scene is one "product": a die
with six bond pads wired to six lead fingers of a lead frame, on mould compound. Every
chip differs only by nuisance (placement, wire loops, lot colour, texture), drawn from
the same distribution whatever its label.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

MOULD = np.array([0.17, 0.17, 0.18], np.float32)
METAL = np.array([0.70, 0.66, 0.58], np.float32)
SILICON = np.array([0.40, 0.42, 0.49], np.float32)
PAD = np.array([0.83, 0.83, 0.80], np.float32)
GOLD = np.array([0.95, 0.82, 0.45], np.float32)
SHADOW = np.array([0.04, 0.04, 0.04], np.float32)

# The die's fixed floor plan (one product): circuit blocks in die-local units
# (u, v in [-1, 1]) with their shade offsets.
_BLOCKS = (
    (-0.62, -0.70, -0.05, -0.08, 0.05),
    (0.05, -0.70, 0.62, -0.08, -0.04),
    (-0.62, 0.08, 0.62, 0.70, 0.025),
    (-0.50, -0.55, -0.18, -0.22, -0.06),
)
PAD_V = (-0.62, 0.0, 0.62)  # pad rows (die-local v) on the left and right die edges
LEAD_DY = (-0.24, 0.0, 0.24)  # lead finger rows relative to the package centre


class Canvas:
    """Supersampled mask drawing at one output size."""

    def __init__(self, size: int):
        self.size = int(size)
        self.ss = max(2, -(-256 // self.size))
        self.scale = self.size * self.ss

    def new(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        im = Image.new("L", (self.scale, self.scale), 0)
        return im, ImageDraw.Draw(im)

    def pts(self, xy: np.ndarray) -> list[tuple[float, float]]:
        return [tuple(p) for p in (np.asarray(xy, np.float64) * self.scale).tolist()]

    def width(self, w: float) -> int:
        """Line width in supersampled pixels for a width ``w`` in image units."""
        return max(1, int(round(w * self.scale)))

    def finish(self, im: Image.Image, blur: float = 0.0) -> np.ndarray:
        """Coverage in [0, 1] at output size; ``blur`` is a Gaussian sigma in image units."""
        im = im.reduce(self.ss)
        if blur > 0:
            im = im.filter(ImageFilter.GaussianBlur(blur * self.size))
        return np.asarray(im, dtype=np.float32) * np.float32(1 / 255)

    def lowfreq(self, rng: np.random.Generator, grid: int) -> np.ndarray:
        """Smooth zero-mean noise of about unit scale: a ``grid``² normal field
        interpolated with Gaussian kernels (two small matrix products, in float64 so
        BLAS kernels of other CPUs round the float32 result the same way)."""
        a = _interp_matrix(self.size, grid)
        return (a @ rng.standard_normal((grid, grid)) @ a.T).astype(np.float32)


@functools.lru_cache(maxsize=32)
def _interp_matrix(size: int, grid: int) -> np.ndarray:
    x = (np.arange(size) + 0.5) / size
    c = (np.arange(grid) + 0.5) / grid
    w = np.exp(-(((x[:, None] - c[None, :]) * grid) ** 2) / 0.8)
    w /= np.sqrt((w**2).sum(1, keepdims=True))  # unit variance for unit normal weights
    return w


def composite(img: np.ndarray, alpha: np.ndarray, colour) -> None:
    """In place: ``img = img * (1 - alpha) + colour * alpha`` (colour RGB or an image).

    Works on the bounding box of ``alpha > 0`` only: most layers are small.
    """
    rows = np.flatnonzero(alpha.any(axis=1))
    if rows.size == 0:
        return
    cols = np.flatnonzero(alpha.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    a = alpha[box][..., None]
    if np.ndim(colour) == 3:
        colour = colour[box]
    sub = img[box]
    sub -= a * (sub - colour)


def rot(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def bezier(p0, p1, p2, n: int = 18) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def ellipse(centre, rx: float, ry: float, angle: float, n: int = 28, jitter=None) -> np.ndarray:
    """Polygon of an (optionally radially jittered) rotated ellipse."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n) if jitter is None else jitter
    local = np.stack([rx * r * np.cos(t), ry * r * np.sin(t)], axis=1)
    return np.asarray(centre) + local @ rot(angle).T


@dataclass
class Geometry:
    """Where everything is on one chip (image units)."""

    centre: np.ndarray  # die centre
    half: np.ndarray  # die half width, half height
    angle: float  # die rotation (rad)
    package: np.ndarray  # package centre (lead frame)
    pads: list = field(default_factory=list)  # pad centres, image units
    pad_half: float = 0.021
    leads: list = field(default_factory=list)  # lead finger polygons
    wires: list = field(default_factory=list)  # Bezier controls (p0 pad, p1, p2 lead)

    def to_img(self, local) -> np.ndarray:
        """Die-local (absolute units, origin at the die centre) → image coordinates."""
        return self.centre + np.asarray(local, np.float64) @ rot(self.angle).T

    def die_polygon(self, grow: float = 0.0) -> np.ndarray:
        hw, hh = self.half + grow
        return self.to_img([(-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh)])

    def die_point(self, rng: np.random.Generator, margin: float = 0.85) -> np.ndarray:
        return self.to_img(rng.uniform(-margin, margin, 2) * self.half)


def sample_geometry(rng: np.random.Generator) -> Geometry:
    package = 0.5 + rng.normal(0, 0.012, 2)
    centre = package + rng.normal(0, 0.010, 2)
    half = np.array([0.195, 0.165]) * (1 + rng.normal(0, 0.015))
    angle = float(np.deg2rad(rng.normal(0, 2.5)))
    geo = Geometry(centre=centre, half=half, angle=angle, package=package)
    hw, hh = half
    lead_half = 0.042
    tip = 0.185
    for side in (-1, 1):
        for k, v in enumerate(PAD_V):
            geo.pads.append(geo.to_img((side * (hw - 0.034), v * hh)))
            y = package[1] + LEAD_DY[k]
            x_tip = package[0] + side * (0.5 - tip)
            x_out = package[0] + side * 0.6
            geo.leads.append(
                np.array([(x_out, y - lead_half), (x_tip, y - lead_half), (x_tip, y + lead_half), (x_out, y + lead_half)])
            )
            end = np.array([x_tip + side * 0.028, y + rng.normal(0, 0.009)])
            start = geo.pads[-1] + rng.normal(0, 0.002, 2)
            d = end - start
            perp = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9)
            ctrl = (start + end) / 2 + perp * rng.normal(0, 0.018) + rng.normal(0, 0.004, 2)
            geo.wires.append((start, ctrl, end))
    return geo


def _complement(gaps, lo: float = 0.0, hi: float = 1.0) -> list[tuple[float, float]]:
    out, t = [], lo
    for g0, g1 in sorted(gaps):
        if g0 > t:
            out.append((t, g0))
        t = max(t, g1)
    if t < hi:
        out.append((t, hi))
    return out


_WIRE_POINTS = 17


def _polyline_part(line: np.ndarray, t0: float, t1: float) -> np.ndarray:
    """The part of a polyline between parameters t0 < t1 (uniform in the vertex index),
    cut on its own segments so a part never leaves the whole line."""
    n = len(line) - 1
    i0, i1 = t0 * n, t1 * n
    inner = line[int(np.floor(i0)) + 1 : int(np.ceil(i1))]

    def at(x):
        k = min(int(np.floor(x)), n - 1)
        return line[k] + (x - k) * (line[k + 1] - line[k])

    return np.vstack([at(i0), inner, at(i1)])


def draw_wires(
    cv: Canvas, geo: Geometry, wire_gaps: dict, keep: float
) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """Coverage of the bond wires and of their (offset, blurred) shadows, and per damaged
    wire the pixels its gaps changed (``removed_support``).

    ``wire_gaps`` maps a wire index to the (t0, t1) Bezier-parameter intervals a defect
    removed ((0, 1): the whole wire, ball and stitch bonds included); those parts are
    drawn at coverage ``keep`` (0: gone; 1: exactly the intact wires).
    """
    w = cv.width(max(0.0105, 0.85 / cv.size))
    ball = 0.013
    stitch = np.array([ball, ball * 0.6])

    def draw(parts_of):
        im, d = cv.new()
        for i, ctrl in enumerate(geo.wires):
            full = bezier(*ctrl, n=_WIRE_POINTS)
            for t0, t1 in parts_of(i):
                d.line(cv.pts(_polyline_part(full, t0, t1)), fill=255, width=w)
                if t0 == 0.0:
                    d.ellipse(cv.pts([ctrl[0] - ball, ctrl[0] + ball]), fill=255)
                if t1 == 1.0:
                    d.ellipse(cv.pts([ctrl[2] - stitch, ctrl[2] + stitch]), fill=255)
        return im

    wires = draw(lambda i: [(0.0, 1.0)])
    # The shadow: the wires shifted down-right (nothing wraps: wires stay off the borders).
    shift = max(1, round(0.0065 * cv.scale))
    shadow_blur = 0.0015
    removed = {}
    if wire_gaps:
        # Clip the damaged drawing to the intact one (rasterising part of a wide line can
        # stick out by a subpixel), then fade the removed parts in by keep.
        a = np.asarray(wires, dtype=np.float32)
        b = np.minimum(np.asarray(draw(lambda i: _complement(wire_gaps.get(i, []))), dtype=np.float32), a)
        wires = Image.fromarray((b + keep * (a - b) + 0.5).astype(np.uint8))
        for j in wire_gaps:  # ground truth: each damaged wire alone, where it and its shadow changed
            only_j = np.minimum(np.asarray(draw(lambda i: _complement(wire_gaps[i]) if i == j else [(0.0, 1.0)]),
                                           dtype=np.float32), a)
            removed[j] = removed_support(cv, a > only_j, shift, shadow_blur)
    shadow = ImageChops.offset(wires, shift, shift)
    return cv.finish(wires), cv.finish(shadow, blur=shadow_blur), removed


def removed_support(cv: Canvas, changed: np.ndarray, shift: int, blur: float) -> np.ndarray:
    """Output pixels a change of the supersampled wire drawing (``changed``, boolean) can
    reach: any changed subpixel, and its shadow (shifted by ``shift``, blurred by ``blur``
    with the shadow's own blur, so the reach matches)."""
    s, ss = cv.size, cv.ss
    direct = changed.reshape(s, ss, s, ss).any(axis=(1, 3))
    moved = np.zeros_like(changed)
    moved[shift:, shift:] = changed[:-shift, :-shift]
    shade = moved.reshape(s, ss, s, ss).any(axis=(1, 3))
    reach = Image.fromarray(shade.astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(blur * s))
    return (direct | (np.asarray(reach) > 0)).astype(np.float32)


@dataclass
class Removed:
    """Where the removal defects changed the scene (coverage > 0 at output size)."""

    cut: np.ndarray | None = None  # the die area cut away (chipped edge)
    wires: dict = field(default_factory=dict)  # wire index -> pixels its gaps changed


def render_scene(
    rng: np.random.Generator, cv: Canvas, geo: Geometry, die_cut: np.ndarray | None, wire_gaps: dict, contrast: float
) -> tuple[np.ndarray, np.ndarray, Removed]:
    """The chip before nuisance: float32 RGB image, the die's coverage after any cut, and
    where the cut and the wire gaps changed it."""
    s = cv.size
    lot = rng.normal(0, 0.015, 3).astype(np.float32)
    # Mould compound: mottled low-frequency texture plus filler grain.
    tex = 1 + 0.14 * cv.lowfreq(rng, 6) + 0.07 * cv.lowfreq(rng, 20)
    tex += 0.12 * (rng.random((s, s), dtype=np.float32) - 0.5)
    img = MOULD * tex[..., None]
    # Lead frame: die paddle, two tie bars, six lead fingers; brushed metal.
    im, d = cv.new()
    hw, hh = geo.half
    pc = geo.package
    d.rectangle(cv.pts([pc - (hw + 0.045, hh + 0.045), pc + (hw + 0.045, hh + 0.045)]), fill=255)
    d.rectangle(cv.pts([(pc[0] - 0.04, -0.1), (pc[0] + 0.04, 1.1)]), fill=255)
    for lead in geo.leads:
        d.polygon(cv.pts(lead), fill=255)
    frame = cv.finish(im)
    brushed = 0.035 * rng.standard_normal((s, 1), dtype=np.float32)
    metal = (METAL + lot * 0.5) * (1 + 0.05 * cv.lowfreq(rng, 4) + brushed)[..., None]
    composite(img, frame, metal)
    # Die: silicon whose brightness is modulated by the floor plan, the seal ring and the
    # bevelled edge, all drawn into one map (value = 128 + 200 * relative change; box
    # reduction of a piecewise-constant map is exact anti-aliasing).
    im, d = cv.new()
    d.polygon(cv.pts(geo.die_polygon()), fill=128)
    for u0, v0, u1, v1, shade in _BLOCKS:
        corners = [(u0 * hw, v0 * hh), (u1 * hw, v0 * hh), (u1 * hw, v1 * hh), (u0 * hw, v1 * hh)]
        d.polygon(cv.pts(geo.to_img(corners)), fill=int(128 + 200 * shade / SILICON.mean()))
    d.polygon(cv.pts(geo.die_polygon(-0.012)), outline=int(128 + 200 * 0.22), width=cv.width(0.005))
    d.polygon(cv.pts(geo.die_polygon()), outline=int(128 - 200 * 0.45), width=cv.width(0.006))
    modulation = (np.asarray(im.reduce(cv.ss), dtype=np.float32) - 128) / 200
    modulation += 0.03 * cv.lowfreq(rng, 5)
    die_img = (SILICON + lot) * (1 + modulation)[..., None]
    im, d = cv.new()
    square = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)]) * geo.pad_half
    for p in geo.pads:
        d.polygon(cv.pts(geo.to_img(square + (p - geo.centre) @ rot(geo.angle))), fill=255)
    composite(die_img, cv.finish(im), PAD)
    im, d = cv.new()
    d.polygon(cv.pts(geo.die_polygon()), fill=255)
    die_alpha = cv.finish(im)
    # Die-attach fillet: a faint dark ring just outside the die (not under it, so a
    # chipped die shows the bright paddle).
    im, d = cv.new()
    d.polygon(cv.pts(geo.die_polygon(0.008)), fill=255)
    composite(img, (cv.finish(im) - die_alpha) * 0.5, SHADOW)
    # Removal defects fade in as (1 - contrast)^2: a faint ghost only at low contrast.
    keep = (1 - contrast) ** 2
    removed = Removed()
    if die_cut is not None:
        removed.cut = die_alpha * die_cut
        die_alpha = die_alpha * (1 - (1 - keep) * die_cut)
    composite(img, die_alpha, die_img)
    # Bond wires with their shadows.
    wire, shadow, removed.wires = draw_wires(cv, geo, wire_gaps, keep)
    composite(img, shadow * 0.45, SHADOW)
    composite(img, wire, GOLD * (1 + lot))
    return img, die_alpha, removed


def apply_nuisance(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Illumination gradient, vignette, brightness, white balance, defocus, sensor noise,
    then the camera's tone curve (gamma); returns uint8."""
    s = img.shape[0]
    # Draw every random number up front so the count never depends on the values.
    bright, grad, phi, vig, gamma, focus, sigma = (
        rng.uniform(0.78, 1.15),
        rng.uniform(0.0, 0.35),
        rng.uniform(0, 2 * np.pi),
        rng.uniform(0.0, 0.5),
        rng.uniform(0.85, 1.15),
        rng.uniform(0.0, 0.5),
        rng.uniform(0.008, 0.03),
    )
    gain = (1 + rng.normal(0, 0.03, 3)).astype(np.float32)
    luma = rng.standard_normal((s, s, 1), dtype=np.float32)
    chroma = rng.random((s, s, 3), dtype=np.float32) - np.float32(0.5)
    c = (np.arange(s, dtype=np.float32) + 0.5) / s - 0.5
    yy, xx = c[:, None], c[None, :]
    illum = np.float32(bright) * (1 + np.float32(grad) * (np.float32(np.cos(phi)) * xx + np.float32(np.sin(phi)) * yy)
                                  - np.float32(vig) * (xx * xx + yy * yy))
    img *= illum[..., None] * gain
    if focus > 0:  # defocus: mix with a separable 3x3 box average
        box = img.copy()
        box[1:-1] += img[:-2] + img[2:]
        box[0] += img[0] + img[1]
        box[-1] += img[-1] + img[-2]
        row = box.copy()
        row[:, 1:-1] += box[:, :-2] + box[:, 2:]
        row[:, 0] += box[:, 0] + box[:, 1]
        row[:, -1] += box[:, -1] + box[:, -2]
        img *= np.float32(1 - focus)
        img += np.float32(focus / 9) * row
    # Sensor noise: mostly luminance (shared by the channels), a little chroma.
    img += np.float32(sigma) * (luma + np.float32(0.4) * chroma)
    np.clip(img, 0, 1, out=img)
    lut = (np.linspace(0, 1, 256) ** gamma * 255 + 0.5).astype(np.uint8)
    return np.take(lut, (img * 255 + 0.5).astype(np.uint8))
