"""Procedural captioned videos: coloured shapes moving over simple backgrounds.

Everything is drawn from the attributes, so the caption is true by construction and
a seed fixes the video. Colours are saturated and backgrounds grey, so an object is
separable from the background by saturation alone (the checker relies on it).
"""

from dataclasses import dataclass, field
from typing import List, Tuple

import numpy as np

FRAMES, HEIGHT, WIDTH = 16, 32, 32

COLORS = {  # RGB in [0, 1]; hues spread around the circle for the checker
    "red": (0.92, 0.12, 0.12),
    "yellow": (0.95, 0.88, 0.10),
    "green": (0.12, 0.80, 0.15),
    "cyan": (0.10, 0.85, 0.90),
    "blue": (0.15, 0.30, 1.00),
    "magenta": (0.90, 0.12, 0.90),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 5.0, "large": 8.0}  # half-extent in pixels: 10 px and 16 px wide
MOTIONS = ("moves left", "moves right", "moves up", "moves down", "bounces")
BACKGROUNDS = ("plain", "gradient", "textured")
PAIR_MOTIONS = ("moves left", "moves right")  # two objects share the frame in two bands

SUPERSAMPLE = 2  # anti-aliased edges, so sub-pixel motion shows


@dataclass
class SceneObject:
    shape: str
    color: str
    size: str
    motion: str
    track: np.ndarray = field(repr=False, default=None)  # [FRAMES, 2] centre (x, y)


@dataclass
class Scene:
    objects: List[SceneObject]
    background: str
    bg_params: Tuple = ()

    @property
    def caption(self) -> str:
        return caption_of(self)


def caption_of(scene: Scene) -> str:
    if len(scene.objects) == 1:
        o = scene.objects[0]
        subject = f"a {o.size} {o.color} {o.shape} {o.motion}"
    else:
        subject = " and ".join(f"a {o.color} {o.shape} {o.motion}" for o in scene.objects)
    return f"{subject} on a {scene.background} background"


def vocabulary() -> List[str]:
    """Every word a caption can contain (the text encoder's vocabulary)."""
    words = set("a and on background".split())
    words.update(COLORS, SHAPES, SIZES, BACKGROUNDS)
    for m in MOTIONS:
        words.update(m.split())
    return sorted(words)


def _linear_track(rng, half: float, motion: str, y_band=(0.0, HEIGHT)) -> np.ndarray:
    """Centre positions for a straight move that stays inside the frame (or band)."""
    t = np.arange(FRAMES, dtype=np.float64)
    axis_len = WIDTH if motion in ("moves left", "moves right") else (y_band[1] - y_band[0])
    room = axis_len - 2 * half - 1
    speed = rng.uniform(0.65, 1.0) * room / (FRAMES - 1)
    start = rng.uniform(half, axis_len - half - speed * (FRAMES - 1))
    along = start + speed * t
    if motion in ("moves left", "moves up"):
        along = axis_len - along  # mirror: same path, opposite direction
    if motion in ("moves left", "moves right"):
        y = rng.uniform(y_band[0] + half + 0.5, y_band[1] - half - 0.5)
        return np.stack([along, np.full(FRAMES, y)], 1)
    x = rng.uniform(half + 0.5, WIDTH - half - 0.5)
    return np.stack([np.full(FRAMES, x), along + y_band[0]], 1)


def _bounce_track(rng, half: float) -> np.ndarray:
    """A ball that falls, hits the bottom between frames 5 and 10, and rises again."""
    t = np.arange(FRAMES, dtype=np.float64)
    hit = rng.integers(5, 11)
    floor = HEIGHT - half - 0.5
    max_speed = (floor - half - 0.5) / max(hit, FRAMES - 1 - hit)
    speed = rng.uniform(0.7, 1.0) * max_speed
    y = floor - speed * np.abs(t - hit)
    x = rng.uniform(half + 0.5, WIDTH - half - 0.5)
    return np.stack([np.full(FRAMES, x), y], 1)


def sample_scene(rng: np.random.Generator, two_objects: bool = None,
                 two_object_prob: float = 0.25) -> Scene:
    if two_objects is None:
        two_objects = rng.random() < two_object_prob
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    colors = list(COLORS)
    if not two_objects:
        obj = SceneObject(SHAPES[rng.integers(3)], colors[rng.integers(len(colors))],
                          list(SIZES)[rng.integers(2)], MOTIONS[rng.integers(len(MOTIONS))])
        half = SIZES[obj.size]
        obj.track = (_bounce_track(rng, half) if obj.motion == "bounces"
                     else _linear_track(rng, half, obj.motion))
        objects = [obj]
    else:
        # Two small objects, one per horizontal band, so they never overlap.
        c1, c2 = rng.choice(len(colors), 2, replace=False)
        objects = []
        for color, band in ((colors[c1], (0.0, HEIGHT / 2)), (colors[c2], (HEIGHT / 2, HEIGHT))):
            obj = SceneObject(SHAPES[rng.integers(3)], color, "small",
                              PAIR_MOTIONS[rng.integers(len(PAIR_MOTIONS))])
            obj.track = _linear_track(rng, SIZES["small"], obj.motion, y_band=band)
            objects.append(obj)
    if background == "plain":
        bg_params = (rng.uniform(0.12, 0.38),)
    elif background == "gradient":
        bg_params = (rng.uniform(0.0, 2 * np.pi), rng.uniform(0.05, 0.12), rng.uniform(0.45, 0.6))
    else:
        bg_params = (rng.uniform(0.12, 0.22), rng.uniform(0.22, 0.3), int(rng.integers(0, 4)))
    return Scene(objects, background, bg_params)


def _background(scene: Scene) -> np.ndarray:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    if scene.background == "plain":
        level = np.full((HEIGHT, WIDTH), scene.bg_params[0])
    elif scene.background == "gradient":
        angle, lo, hi = scene.bg_params
        proj = (xx - WIDTH / 2) * np.cos(angle) + (yy - HEIGHT / 2) * np.sin(angle)
        proj = (proj - proj.min()) / (proj.max() - proj.min())
        level = lo + (hi - lo) * proj
    else:  # checkerboard of 4-pixel cells; the phase varies
        base, contrast, phase = scene.bg_params
        cells = ((xx + phase) // 4 + (yy + phase) // 4) % 2
        level = base + contrast * cells
    return np.repeat(level[..., None], 3, axis=2)


def shape_mask(shape: str, cx: float, cy: float, half: float,
               height: int = HEIGHT, width: int = WIDTH, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """Coverage in [0, 1] of each pixel by the shape centred at (cx, cy), pixel units."""
    s = supersample
    ys, xs = np.mgrid[0:height * s, 0:width * s].astype(np.float64)
    xs, ys = (xs + 0.5) / s - cx, (ys + 0.5) / s - cy
    if shape == "circle":
        inside = xs ** 2 + ys ** 2 <= half ** 2
    elif shape == "square":
        inside = (np.abs(xs) <= half) & (np.abs(ys) <= half)
    else:  # upward triangle, apex at the top, centred on its bounding box
        rel = (ys + half) / (2 * half)  # 0 at apex, 1 at base
        inside = (rel >= 0) & (rel <= 1) & (np.abs(xs) <= half * rel)
    return inside.reshape(height, s, width, s).mean(axis=(1, 3))


def render(scene: Scene) -> np.ndarray:
    """The video as float32 [FRAMES, HEIGHT, WIDTH, 3] in [0, 1]."""
    bg = _background(scene)
    video = np.empty((FRAMES, HEIGHT, WIDTH, 3), dtype=np.float64)
    for f in range(FRAMES):
        frame = bg.copy()
        for obj in scene.objects:
            cx, cy = obj.track[f]
            cover = shape_mask(obj.shape, cx, cy, SIZES[obj.size])[..., None]
            frame = frame * (1 - cover) + np.asarray(COLORS[obj.color]) * cover
        video[f] = frame
    return video.astype(np.float32)


def make_video(seed: int, two_objects: bool = None, two_object_prob: float = 0.25):
    """(video [F, H, W, 3] in [0, 1], caption, scene) for a seed; deterministic."""
    rng = np.random.default_rng(seed)
    scene = sample_scene(rng, two_objects=two_objects, two_object_prob=two_object_prob)
    return render(scene), scene.caption, scene


def to_model_space(video: np.ndarray):
    """[F, H, W, 3] in [0, 1] -> torch [3, F, H, W] in [-1, 1] (Wan's pixel range)."""
    import torch
    return torch.from_numpy(video).permute(3, 0, 1, 2).mul(2).sub(1).contiguous()


def from_model_space(video) -> np.ndarray:
    """torch [3, F, H, W] in [-1, 1] -> [F, H, W, 3] in [0, 1]."""
    return video.detach().float().clamp(-1, 1).add(1).div(2).permute(1, 2, 3, 0).cpu().numpy()
