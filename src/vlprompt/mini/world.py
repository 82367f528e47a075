"""The mini world: procedurally drawn images of objects with attributes, and their captions.

An image shows `count` identical objects (a shape with a colour, a fill pattern and a size) on a
textured background scene, rendered in a style (a photo-like default, or a domain-shifted look:
sketch, cartoon, noisy, inverted, blurry, pixelated). `Attributes` is the whole truth about an
image; `render(attrs, seed)` draws it and `caption(attrs, rng)` describes it in one of several
phrasings, mentioning a random subset of the attributes. Everything is a pure function of its
seed: the same seed gives the same pixels and the same words on every machine (numpy's PCG64 and
PIL's rasterizer are both deterministic).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WORLD_VERSION = "2"  # bump whenever drawing or captions change (names the data-set cache)
IMAGE_SIZE = 64  # pixels; the tiny CLIP's input size
SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down (anti-aliased edges)

SHAPES = (
    "circle",
    "square",
    "triangle",
    "star",
    "heart",
    "cross",
    "diamond",
    "hexagon",
    "crescent",
    "arrow",
)
PLURALS = {s: s + "s" for s in SHAPES} | {"cross": "crosses"}
COLORS = {  # RGB 0-255; each image jitters every channel by up to +-15
    "red": (215, 35, 35),
    "orange": (245, 135, 25),
    "yellow": (245, 215, 35),
    "green": (45, 165, 55),
    "blue": (35, 75, 215),
    "purple": (135, 50, 185),
    "pink": (245, 135, 190),
    "brown": (125, 75, 35),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
PATTERNS = ("plain", "striped", "dotted", "checkered", "outlined")
SIZES = ("small", "large")
COUNTS = (1, 2, 3, 4)
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
POSITIONS = ("left", "right", "top", "bottom", "center")  # single objects only
POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
SCENES = ("grass", "sand", "sky", "snow", "night", "wood", "water", "brick")
SCENE_MEANS = {  # the mean colour of each background texture (for the contrast rule)
    "grass": (70, 140, 60),
    "sand": (215, 190, 140),
    "sky": (130, 180, 240),
    "snow": (238, 242, 250),
    "night": (18, 22, 48),
    "wood": (150, 100, 55),
    "water": (40, 100, 160),
    "brick": (165, 75, 55),
}
STYLES = ("photo", "sketch", "cartoon", "noisy", "inverted", "blurry", "pixelated")
STYLE_PREFIXES = {
    "photo": ("a photo of ", "an image of ", "a picture of ", ""),
    "sketch": ("a sketch of ", "a pencil sketch of ", "a drawing of "),
    "cartoon": ("a cartoon of ", "a cartoon drawing of "),
    "noisy": ("a noisy photo of ", "a grainy photo of "),
    "inverted": ("an inverted photo of ", "a negative image of "),
    "blurry": ("a blurry photo of ", "an out of focus photo of "),
    "pixelated": ("a pixelated photo of ", "a low resolution photo of "),
}
STYLE_WORDS = {
    "photo": "photo",
    "sketch": "sketch",
    "cartoon": "cartoon",
    "noisy": "noisy",
    "inverted": "inverted",
    "blurry": "blurry",
    "pixelated": "pixelated",
}
MIN_CONTRAST = 0.3  # least RGB distance (0-1 scale) between object colour and background mean


@dataclass(frozen=True)
class Attributes:
    """Everything that is true about one image of the mini world."""

    shape: str  # one of SHAPES
    color: str  # one of COLORS
    pattern: str  # one of PATTERNS
    size: str  # "small" or "large"
    count: int  # 1..4 identical objects
    position: str | None  # one of POSITIONS when count == 1, else None
    background: str  # one of SCENES
    style: str = "photo"  # one of STYLES

    def to_dict(self) -> dict:
        return asdict(self)


def contrast_ok(color: str, background: str) -> bool:
    """Whether an object of `color` stands out on `background` (else it is not drawn so)."""
    a = np.array(COLORS[color]) / 255.0
    b = np.array(SCENE_MEANS[background]) / 255.0
    return float(np.linalg.norm(a - b)) >= MIN_CONTRAST


# Weights of the pre-training distribution: plain fills, single objects and photos are common.
_PATTERN_P = (0.4, 0.15, 0.15, 0.15, 0.15)
_COUNT_P = (0.55, 0.15, 0.15, 0.15)
_STYLE_P = (0.58, 0.07, 0.07, 0.07, 0.07, 0.07, 0.07)


_COLOR_NAMES = tuple(COLORS)


def _pick(rng: np.random.Generator, items: tuple, p: tuple | None = None):
    """One item, uniformly or with probabilities `p` (faster than rng.choice for tiny lists)."""
    if p is None:
        return items[int(rng.integers(len(items)))]
    return items[
        min(int(np.searchsorted(np.cumsum(p), rng.random(), side="right")), len(items) - 1)
    ]


def sample_attributes(rng: np.random.Generator, **fixed) -> Attributes:
    """Draw attributes from the world's distribution; keyword arguments fix some of them.

    Free attributes are re-drawn until the object colour contrasts with the background.
    """
    unknown = set(fixed) - set(Attributes.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown attribute(s) {sorted(unknown)}; known: {list(asdict_keys())}")
    for _ in range(1000):
        count = fixed.get("count", _pick(rng, COUNTS, _COUNT_P))
        values = {
            "shape": _pick(rng, SHAPES),
            "color": _pick(rng, _COLOR_NAMES),
            "pattern": _pick(rng, PATTERNS, _PATTERN_P),
            "size": _pick(rng, SIZES),
            "count": count,
            "position": _pick(rng, POSITIONS) if count == 1 else None,
            "background": _pick(rng, SCENES),
            "style": _pick(rng, STYLES, _STYLE_P),
        }
        values.update(fixed)
        if values["count"] != 1:
            values["position"] = None
        if contrast_ok(values["color"], values["background"]):
            return Attributes(**values)
    raise ValueError(f"no background contrasts with the fixed attributes {fixed}")


def asdict_keys() -> tuple[str, ...]:
    return tuple(Attributes.__dataclass_fields__)


# ---- captions ------------------------------------------------------------------------------


def _article(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" else "a"


def caption(
    attrs: Attributes, rng: np.random.Generator, require: tuple[str, ...] | frozenset = ()
) -> str:
    """A caption of `attrs` in one of several phrasings; each attribute is mentioned with some
    probability, so the text encoder learns every attribute word on its own and in combination
    (e.g. "a photo of two small red striped circles on grass", "red circles, striped").
    `require` names attributes that must be mentioned ("shape", "color", "pattern", "size",
    "count", "background"): pre-training uses it for pairs of images that differ in one of them.
    """
    a = attrs
    plural = a.count > 1
    # "a red shape": lets colour words stand without a shape word
    generic = "shape" not in require and rng.random() < 0.15
    noun = (
        ("shapes" if plural else "shape") if generic else (PLURALS[a.shape] if plural else a.shape)
    )
    size = a.size if "size" in require or rng.random() < 0.5 else None
    color = a.color if generic or "color" in require or rng.random() < 0.8 else None
    pattern_p = 0.3 if a.pattern == "plain" else 0.65
    pattern = a.pattern if "pattern" in require or rng.random() < pattern_p else None
    if a.count == 1:
        det = "one" if ("count" in require or rng.random() < 0.25) else None
    else:
        det = NUMBER_WORDS[a.count] if "count" in require or rng.random() < 0.9 else "some"
    scene = a.background if "background" in require or rng.random() < 0.6 else None
    position = POSITION_PHRASES[a.position] if a.position and rng.random() < 0.4 else None
    style = a.style if (a.style != "photo" and rng.random() < 0.85) else None

    form = int(rng.integers(4))
    if form == 1:  # "red circles, striped, on grass"
        head = " ".join(w for w in (det, color, noun) if w)
        tail = [w for w in (size, pattern) if w]
        if scene:
            tail.append(f"on {scene}")
        if position:
            tail.append(position)
        if style:
            tail.append(STYLE_WORDS[style])
        return ", ".join([head, *tail])

    phrase = " ".join(w for w in (size, color, pattern, noun) if w)
    det = det or _article(phrase)
    group = f"{det} {phrase}"
    if form == 2 and scene:  # "a grass background with two red circles"
        text = f"a {scene} background with {group}"
        if position:
            text += f" {position}"
        return f"{text}, {STYLE_WORDS[style]}" if style else text
    where = ""
    if scene:
        where = " " + str(
            rng.choice([f"on {scene}", f"on a {scene} background", f"against a {scene} background"])
        )
    if position:
        where += f" {position}"
    if form == 3:  # "there are two red circles on grass"
        verb = "are" if plural else "is"
        text = f"there {verb} {group}{where}"
        return f"{text}, {STYLE_WORDS[style]}" if style else text
    prefixes = STYLE_PREFIXES[style or "photo"]
    return f"{rng.choice(prefixes)}{group}{where}"


# ---- rendering -----------------------------------------------------------------------------


def _unit_polygon(shape: str) -> np.ndarray:
    """Vertices (N, 2) of `shape` around the origin, circumradius about 1, y pointing down."""
    if shape == "circle":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return 0.9 * np.stack([np.cos(t), np.sin(t)], 1)
    if shape == "square":
        return np.array([[-0.72, -0.72], [0.72, -0.72], [0.72, 0.72], [-0.72, 0.72]])
    if shape == "triangle":
        t = np.deg2rad([-90, 30, 150])
        return np.stack([np.cos(t), np.sin(t) + 0.15], 1)
    if shape == "star":
        t = np.deg2rad(np.arange(10) * 36 - 90)
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return np.stack([r * np.cos(t), r * np.sin(t) + 0.08], 1)
    if shape == "heart":
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
        return np.stack([x, -y - 2], 1) / 16.5
    if shape == "cross":
        w, e = 0.3, 0.9
        return np.array(
            [[-w, -e], [w, -e], [w, -w], [e, -w], [e, w], [w, w], [w, e], [-w, e], [-w, w]]
            + [[-e, w], [-e, -w], [-w, -w]]
        )
    if shape == "diamond":
        return np.array([[0, -1.0], [0.6, 0], [0, 1.0], [-0.6, 0]])
    if shape == "hexagon":
        t = np.deg2rad(np.arange(6) * 60)
        return 0.95 * np.stack([np.cos(t), np.sin(t)], 1)
    if shape == "arrow":
        return np.array(
            [[0, -1.0], [0.7, -0.2], [0.28, -0.2], [0.28, 0.95], [-0.28, 0.95], [-0.28, -0.2]]
            + [[-0.7, -0.2]]
        )
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, angle: float
):
    """Fill `shape` (centre cx, cy; radius r; rotated by `angle` radians) with 255 on `draw`."""
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])

    def place(points: np.ndarray) -> list[tuple[float, float]]:
        p = points @ rot.T * r + np.array([cx, cy])
        return [tuple(map(float, q)) for q in p]

    if shape == "crescent":  # a disc with an offset disc cut out of it
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        disc = np.stack([np.cos(t), np.sin(t)], 1)
        draw.polygon(place(0.9 * disc), fill=255)
        draw.polygon(place(0.72 * disc + np.array([0.42, -0.2])), fill=0)
        return
    draw.polygon(place(_unit_polygon(shape)), fill=255)


def _radius_range(size: str, count: int) -> tuple[float, float]:
    """Object radius as a fraction of the image side."""
    if count == 1:
        return (0.13, 0.17) if size == "small" else (0.27, 0.33)
    return (0.08, 0.10) if size == "small" else (0.13, 0.16)


_POSITION_BOXES = {  # (x range, y range) of a single object's centre, fractions of the side
    "left": ((0.2, 0.3), (0.35, 0.65)),
    "right": ((0.7, 0.8), (0.35, 0.65)),
    "top": ((0.35, 0.65), (0.2, 0.3)),
    "bottom": ((0.35, 0.65), (0.7, 0.8)),
    "center": ((0.45, 0.55), (0.45, 0.55)),
}


def _layout(
    a: Attributes, rng: np.random.Generator, n: int
) -> tuple[list[tuple[float, float]], float]:
    """Object centres (pixels) and the common radius; objects never overlap."""
    lo, hi = _radius_range(a.size, a.count)
    r = rng.uniform(lo, hi) * n
    if a.count == 1:
        (x0, x1), (y0, y1) = _POSITION_BOXES[a.position or "center"]
        x = float(np.clip(rng.uniform(x0, x1) * n, r, n - r))
        y = float(np.clip(rng.uniform(y0, y1) * n, r, n - r))
        return [(x, y)], r
    for _ in range(50):  # shrink a little whenever random placement keeps failing
        centres: list[tuple[float, float]] = []
        for _ in range(200):
            x, y = rng.uniform(r + 1, n - r - 1, size=2)
            if all((x - u) ** 2 + (y - v) ** 2 > (2 * r + 2) ** 2 for u, v in centres):
                centres.append((float(x), float(y)))
                if len(centres) == a.count:
                    return centres, r
        r *= 0.95
    raise RuntimeError(f"could not place {a.count} objects")  # pragma: no cover


_GRIDS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel row and column coordinates (yy, xx) of an n x n image, float32 (cached, read-only)."""
    if n not in _GRIDS:
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
        yy.flags.writeable = False
        xx.flags.writeable = False
        _GRIDS[n] = (yy, xx)
    return _GRIDS[n]


def _erode(mask: np.ndarray, k: int) -> np.ndarray:
    """Grey-level erosion of `mask` by a (2k+1)^2 square (min over shifted copies)."""
    padded = np.pad(mask, k, mode="constant")
    n, m = mask.shape
    out = mask.copy()
    for dy in range(2 * k + 1):
        for dx in range(2 * k + 1):
            np.minimum(out, padded[dy : dy + n, dx : dx + m], out=out)
    return out


def _scene(name: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """The background texture [n, n, 3] in 0..1."""
    yy, xx = (g * (64.0 / n) for g in _grid(n))
    base = np.array(SCENE_MEANS[name], np.float32) / 255.0
    img = np.broadcast_to(base, (n, n, 3)).copy()
    noise = rng.normal(size=(n, n)).astype(np.float32)
    if name == "grass":
        blades = rng.normal(size=(1, n)).astype(np.float32) * 0.07
        img += (blades + 0.05 * noise)[..., None] * np.array([0.6, 1.0, 0.5])
    elif name == "sand":
        ripple = 0.04 * np.sin(yy / 2.5 + 1.5 * np.sin(xx / 9 + rng.uniform(0, 6)))
        img += (ripple + 0.035 * noise)[..., None]
    elif name == "sky":
        grad = (yy / 64.0 - 0.5)[..., None] * np.array([0.25, 0.2, 0.08])
        img += grad.astype(np.float32)
        for _ in range(int(rng.integers(1, 4))):  # soft clouds
            cx, cy = rng.uniform(0, 64, size=2)
            sx, sy = rng.uniform(8, 16), rng.uniform(3, 6)
            cloud = np.exp(-(((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2))
            img += cloud[..., None] * (1.0 - img) * 0.8
    elif name == "snow":
        img += (0.02 * noise)[..., None] - (0.04 * np.sin(xx / 11 + yy / 7))[..., None] * [1, 1, 0]
    elif name == "night":
        stars = rng.random((n, n)) < 0.012
        img[stars] = rng.uniform(0.7, 1.0, size=(int(stars.sum()), 1))
    elif name == "wood":
        phase = rng.uniform(0, 6)
        grain = np.sin((yy + 3 * np.sin(xx / 10 + phase)) / 1.8)
        img += (0.07 * grain + 0.02 * noise)[..., None]
    elif name == "water":
        waves = np.sin(xx / 3 + 2 * np.sin(yy / 5 + rng.uniform(0, 6)))
        img += (0.07 * waves)[..., None] * np.array([0.6, 0.9, 1.0]) + (0.02 * noise)[..., None]
    elif name == "brick":
        h, w = 8, 16
        row = (yy // h).astype(int)
        offset = (row % 2) * (w // 2)
        mortar = ((yy % h) < 1.2) | (((xx + offset) % w) < 1.2)
        img += (0.04 * noise)[..., None]
        img[mortar] = np.array([0.78, 0.76, 0.72], np.float32)
    else:
        raise ValueError(f"unknown background {name!r}; known: {', '.join(SCENES)}")
    return np.clip(img, 0.0, 1.0)


def _pattern_fill(
    a: Attributes, rgb: np.ndarray, rng: np.random.Generator, n: int, r: float
) -> np.ndarray:
    """The object's fill [n, n, 3]: its colour, with stripes/dots/checks in a contrasting tone."""
    fill = np.broadcast_to(rgb, (n, n, 3)).astype(np.float32).copy()
    if a.pattern in ("plain", "outlined"):
        return fill
    luminance = float(rgb @ np.array([0.299, 0.587, 0.114]))
    other = rgb * 0.3 if luminance > 0.55 else rgb * 0.2 + 0.8
    yy, xx = _grid(n)
    period = float(np.clip(r * 0.55, 3.0, 8.0 * n / 64))
    if a.pattern == "striped":
        theta = rng.choice([0.0, 45.0, 90.0, 135.0]) + rng.uniform(-10, 10)
        t = np.deg2rad(theta)
        u = (xx * math.cos(t) + yy * math.sin(t)) / period + rng.uniform(0, 1)
        on = (u % 1.0) < 0.5
    elif a.pattern == "dotted":
        ox, oy = rng.uniform(0, period, size=2)
        dx = (xx + ox) % period - period / 2
        dy = (yy + oy) % period - period / 2
        on = dx**2 + dy**2 < (0.28 * period) ** 2
    elif a.pattern == "checkered":
        ox, oy = rng.uniform(0, period, size=2)
        on = ((np.floor((xx + ox) / period) + np.floor((yy + oy) / period)) % 2) == 1
    else:
        raise ValueError(f"unknown pattern {a.pattern!r}; known: {', '.join(PATTERNS)}")
    fill[on] = other
    return fill


def _edges(gray: np.ndarray) -> np.ndarray:
    """Gradient magnitude of a grey image (central differences, zero at the border)."""
    gx = np.zeros_like(gray)
    gy = np.zeros_like(gray)
    gx[:, 1:-1] = gray[:, 2:] - gray[:, :-2]
    gy[1:-1, :] = gray[2:, :] - gray[:-2, :]
    return np.sqrt(gx**2 + gy**2)


def _to_pil(img: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))


def _from_pil(im: Image.Image) -> np.ndarray:
    return np.asarray(im, dtype=np.float32) / 255.0


def render(
    attrs: Attributes, seed: int | np.random.Generator, size: int = IMAGE_SIZE
) -> Image.Image:
    """Draw `attrs` as an RGB image of `size` x `size` pixels, deterministically from `seed`."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    a = attrs
    n = size
    background = _scene(a.background, rng, n)
    centres, r = _layout(a, rng, n)

    canvas = Image.new("L", (n * SUPERSAMPLE, n * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(canvas)
    angle = rng.uniform(-0.35, 0.35)
    for cx, cy in centres:
        s = SUPERSAMPLE
        _draw_shape(draw, a.shape, cx * s, cy * s, r * s, angle + rng.uniform(-0.1, 0.1))
    mask = _from_pil(canvas.reduce(SUPERSAMPLE))

    rgb = np.array(COLORS[a.color], np.float32) / 255.0
    rgb = np.clip(rgb + rng.uniform(-15, 15, size=3) / 255.0, 0, 1)
    fill = _pattern_fill(a, rgb, rng, n, r)
    line = max(1, round(1.5 * n / 64))
    alpha = mask - _erode(mask, line) if a.pattern == "outlined" else mask

    if a.style == "cartoon":  # flat colours, flat background, thick black outlines
        background = np.broadcast_to(background.mean((0, 1)), background.shape)
        img = background * (1 - alpha[..., None]) + fill * alpha[..., None]
        outline = np.clip(mask - _erode(mask, line), 0, 1)[..., None]
        return _to_pil(img * (1 - outline) + 0.05 * outline)

    # photo-like: a soft drop shadow and directional shading
    shift = max(1, n // 32)
    shadow = np.roll(mask, (shift, shift), axis=(0, 1))
    shadow = _from_pil(_to_pil(np.repeat(shadow[..., None], 3, 2)).filter(ImageFilter.BoxBlur(1)))
    background = background * (1 - 0.35 * shadow)
    yy, xx = (g / n for g in _grid(n))
    light = rng.uniform(0, 2 * np.pi)
    shade = 0.88 + 0.24 * ((xx - 0.5) * math.cos(light) + (yy - 0.5) * math.sin(light))
    img = background * (1 - alpha[..., None]) + fill * shade[..., None] * alpha[..., None]
    img = img + rng.normal(scale=0.015, size=img.shape).astype(np.float32)

    if a.style == "photo":
        return _to_pil(img)
    if a.style == "sketch":  # pencil lines on paper, no colour
        gray = np.clip(img, 0, 1) @ np.array([0.299, 0.587, 0.114], np.float32)
        strokes = np.clip(_edges(gray) * 3.5, 0, 1)
        paper = 0.93 + 0.03 * rng.normal(size=gray.shape).astype(np.float32)
        return _to_pil(np.repeat((paper * (1 - strokes))[..., None], 3, 2))
    if a.style == "noisy":
        return _to_pil(img + rng.normal(scale=0.14, size=img.shape).astype(np.float32))
    if a.style == "inverted":
        return _to_pil(1.0 - img)
    if a.style == "blurry":
        return _to_pil(img).filter(ImageFilter.GaussianBlur(radius=1.6 * n / 64))
    if a.style == "pixelated":
        small = max(4, n // 4)
        return _to_pil(img).resize((small, small), Image.BOX).resize((n, n), Image.NEAREST)
    raise ValueError(f"unknown style {a.style!r}; known: {', '.join(STYLES)}")


def restyle(attrs: Attributes, style: str) -> Attributes:
    """The same attributes drawn in another style (a domain shift that keeps everything else)."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; known: {', '.join(STYLES)}")
    return replace(attrs, style=style)


def sample(seed: int, index: int, size: int = IMAGE_SIZE) -> tuple[Image.Image, str, Attributes]:
    """The `index`-th (image, caption, attributes) of the pre-training stream of `seed`."""
    rng = np.random.default_rng([seed, index])
    attrs = sample_attributes(rng)
    text = caption(attrs, rng)
    return render(attrs, rng, size), text, attrs
