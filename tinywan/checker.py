"""Prompt following measured on generated pixels, with no learned component.

Per video: saturated pixels are objects (backgrounds are grey), their hue names the
colour, the best-fitting area-matched template (IoU) names the shape, the centroid
trajectory names the motion, the bounding-box extent the size, and a plane fit of
the remaining grey pixels tells plain / gradient / textured backgrounds apart.
"""

import colorsys
from collections import Counter
from typing import Dict, List, Optional

import numpy as np

from tinywan import data

SATURATION = 0.3  # object pixels: max - min channel above this
FAINT = 0.08  # anti-aliased edge pixels still carry the object's hue above this
MIN_AREA = 12  # pixels; smaller blobs are noise
PALETTE_HUES = {name: colorsys.rgb_to_hsv(*rgb)[0] * 360 for name, rgb in data.COLORS.items()}
NAMES = list(PALETTE_HUES)
HUES = np.array([PALETTE_HUES[n] for n in NAMES])


def color_labels(video: np.ndarray, threshold: float = SATURATION) -> np.ndarray:
    """[F, H, W] palette index per pixel, -1 where the pixel is not saturated."""
    mx, mn = video.max(-1), video.min(-1)
    sat = (mx - mn) > threshold
    r, g, b = video[..., 0], video[..., 1], video[..., 2]
    delta = np.maximum(mx - mn, 1e-6)
    hue = np.where(mx == r, ((g - b) / delta) % 6,
                   np.where(mx == g, (b - r) / delta + 2, (r - g) / delta + 4)) * 60
    dist = np.abs(hue[..., None] - HUES)
    dist = np.minimum(dist, 360 - dist)
    return np.where(sat, dist.argmin(-1), -1)


def coverage(video: np.ndarray, strong_mask: np.ndarray, faint_mask: np.ndarray) -> np.ndarray:
    """[F, H, W] fraction of each pixel covered by one object: a mix of the object's
    colour with grey keeps its hue and scales its saturation."""
    sat = video.max(-1) - video.min(-1)
    strong = sat[strong_mask]
    reference = np.percentile(strong, 90) if strong.size else 1.0
    return np.where(faint_mask, np.clip(sat / max(reference, 1e-6), 0, 1), 0)


def _templates(cover: np.ndarray) -> Dict[str, float]:
    """Soft IoU of the coverage with each shape, area-matched and centred on it."""
    area = cover.sum()
    yy, xx = np.mgrid[0:cover.shape[0], 0:cover.shape[1]]
    cx, cy = (xx * cover).sum() / area + 0.5, (yy * cover).sum() / area + 0.5
    halves = {"circle": np.sqrt(area / np.pi), "square": np.sqrt(area) / 2,
              "triangle": np.sqrt(area / 2)}
    scores = {}
    for shape, half in halves.items():
        centre_y = cy - half / 3 if shape == "triangle" else cy  # triangle centroid sits low
        tmpl = data.shape_mask(shape, cx, centre_y, half, *cover.shape, supersample=4)
        scores[shape] = np.minimum(tmpl, cover).sum() / max(np.maximum(tmpl, cover).sum(), 1e-6)
    return scores


def shape_of(masks: np.ndarray, covers: np.ndarray) -> Optional[str]:
    votes = Counter()
    for m, c in zip(masks, covers):
        if m.sum() >= MIN_AREA:
            s = _templates(c)
            votes[max(s, key=s.get)] += 1
    return votes.most_common(1)[0][0] if votes else None


def size_of(masks: np.ndarray) -> Optional[str]:
    extents = []
    for m in masks:
        if m.sum() >= MIN_AREA:
            ys, xs = np.nonzero(m)
            extents.append(max(xs.max() - xs.min(), ys.max() - ys.min()) + 1)
    if not extents:
        return None
    return "large" if np.median(extents) > (2 * data.SIZES["small"] + 2 * data.SIZES["large"]) / 2 else "small"


def motion_of(masks: np.ndarray) -> Optional[str]:
    track = []
    for m in masks:
        if m.sum() >= MIN_AREA:
            ys, xs = np.nonzero(m)
            track.append((xs.mean(), ys.mean()))
        else:
            track.append((np.nan, np.nan))
    track = np.array(track)
    valid = ~np.isnan(track[:, 0])
    if valid.sum() < len(masks) // 2:
        return None
    t = track[valid]
    start, end = t[:2].mean(0), t[-2:].mean(0)
    dx, dy = end - start
    peak = t[:, 1].max() - max(start[1], end[1])  # falls then rises: y peaks inside
    if peak > 3 and 1 < t[:, 1].argmax() < len(t) - 2:
        return "bounces"
    if max(abs(dx), abs(dy)) < 2:
        return None  # static
    if abs(dx) >= abs(dy):
        return "moves right" if dx > 0 else "moves left"
    return "moves down" if dy > 0 else "moves up"


def background_of(video: np.ndarray, labels: np.ndarray) -> str:
    grey = video.mean(-1)
    bg = labels < 0
    # One pixel of margin around objects: anti-aliased edges are neither.
    near = np.zeros_like(bg)
    obj = ~bg
    near[:, 1:] |= obj[:, :-1]; near[:, :-1] |= obj[:, 1:]
    near[:, :, 1:] |= obj[:, :, :-1]; near[:, :, :-1] |= obj[:, :, 1:]
    bg &= ~near
    counts = bg.sum(0)
    seen = counts > 0
    if seen.sum() < 20:
        return "plain"
    image = np.where(bg, grey, 0).sum(0)[seen] / counts[seen]
    yy, xx = np.nonzero(seen)
    design = np.stack([np.ones_like(xx), xx, yy], 1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(design, image, rcond=None)
    residual = (image - design @ coef).std()
    amplitude = abs(coef[1]) * data.WIDTH + abs(coef[2]) * data.HEIGHT
    if residual > 0.05:
        return "textured"
    return "gradient" if amplitude > 0.15 else "plain"


def analyze(video: np.ndarray, colors: Optional[List[str]] = None) -> dict:
    """Attributes read from a video [F, H, W, 3] in [0, 1].

    With ``colors`` (the prompt's object colours) each object is the set of pixels of
    its colour, so two-object videos are read object by object; without, the single
    object is every saturated pixel.
    """
    labels = color_labels(video)
    faint = color_labels(video, FAINT)
    counts = Counter(labels[labels >= 0].tolist())
    found = [NAMES[i] for i, c in counts.most_common() if c >= MIN_AREA * len(video) // 4]
    objects = []
    if colors is None or len(colors) == 1:
        masks, covers = [labels >= 0], [coverage(video, labels >= 0, faint >= 0)]
        present = found[:1]
    else:
        masks = [labels == NAMES.index(c) for c in colors]
        covers = [coverage(video, m, faint == NAMES.index(c)) for m, c in zip(masks, colors)]
        present = found[:len(colors)]
    for m, c in zip(masks, covers):
        objects.append({"shape": shape_of(m, c), "motion": motion_of(m), "size": size_of(m)})
    return {"colors": present, "objects": objects, "background": background_of(video, labels)}


ATTRIBUTES = ("colour", "shape", "motion", "size", "background")


def check(video: np.ndarray, scene: data.Scene) -> Dict[str, List[bool]]:
    """Per attribute, one bool per prompted item (object, or the background)."""
    colors = [o.color for o in scene.objects]
    found = analyze(video, colors)
    result = {a: [] for a in ATTRIBUTES}
    for obj, seen in zip(scene.objects, found["objects"]):
        result["colour"].append(obj.color in found["colors"])
        result["shape"].append(seen["shape"] == obj.shape)
        result["motion"].append(seen["motion"] == obj.motion)
        if len(scene.objects) == 1:
            result["size"].append(seen["size"] == obj.size)
    result["background"].append(found["background"] == scene.background)
    return result


def chance(scene: data.Scene) -> Dict[str, List[float]]:
    """What guessing uniformly among the generator's options would score."""
    single = len(scene.objects) == 1
    motions = len(data.MOTIONS) if single else len(data.PAIR_MOTIONS)
    n = len(scene.objects)
    return {"colour": [n / len(data.COLORS)] * n if not single else [1 / len(data.COLORS)],
            "shape": [1 / len(data.SHAPES)] * n, "motion": [1 / motions] * n,
            "size": [1 / len(data.SIZES)] if single else [],
            "background": [1 / len(data.BACKGROUNDS)]}


def summarize(results: List[Dict[str, List[bool]]], chances: List[Dict[str, List[float]]] = None) -> dict:
    """Per attribute: accuracy over all items, and chance over the same items."""
    out = {}
    for a in ATTRIBUTES:
        items = [x for r in results for x in r[a]]
        row = {"accuracy": float(np.mean(items)) if items else None, "n": len(items)}
        if chances is not None:
            c = [x for r in chances for x in r[a]]
            row["chance"] = float(np.mean(c)) if c else None
        out[a] = row
    return out


def format_summary(summary: dict) -> str:
    lines = []
    for a, row in summary.items():
        if row["accuracy"] is None:
            continue
        ch = f"  (chance {row['chance']:.0%})" if row.get("chance") is not None else ""
        lines.append(f"  {a:<10} {row['accuracy']:6.1%} of {row['n']}{ch}")
    return "\n".join(lines)
