"""Synthetic stand-in for the Kaggle cats-vs-dogs photos.

No real photos can be downloaded on the offline build machine, so the default
dataset is drawn procedurally: every JPEG shows one cartoon animal, and its
class is carried by SHAPE alone -- a cat has a round head, pointed ears on top,
whiskers and a small nose; a dog has a protruding muzzle, floppy ears hanging
beside the head and sometimes a tongue.

It is meant to be hard in the way web photos are hard, so that a linear model
on raw pixels stays near chance while a small CNN learns it:
  * geometry: random canvas size/aspect, position, scale, rotation, mirroring,
    a little head yaw, occasional cropping at the border;
  * appearance: fur colours and patterns (spots/stripes) come from one palette
    shared by both classes, so colour, brightness and covered area carry no
    class information;
  * scene: textured gradient backgrounds with distractor triangles/ellipses
    (ear-like shapes appear in the background of both classes), occluders that
    never hide every class-defining part, lighting, noise, blur and JPEG
    quality variation.

Each image has its own RNG seeded by (seed, class, index), so the output is
byte-identical for a given seed whatever the number of worker processes.

Each image also comes with the animal's bounding box (write_boxes): the union of
every part drawn as the animal, occluded or not, never the occluder, clipped to
the canvas.
"""
from __future__ import annotations

import csv
import hashlib
import io
import math
import pathlib
from multiprocessing import get_context

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from catdog.files import write_text

CLASSES = ("cat", "dog")
SS = 2  # supersampling factor: draw at 2x, downsample for anti-aliasing
BOX_COLUMNS = ("file", "sha256", "width", "height", "x0", "y0", "x1", "y1")  # what data.prepared.read_boxes reads

# One fur palette for both classes (black, greys, browns, ginger, cream, white).
FUR = np.array([[25, 22, 20], [70, 66, 62], [125, 120, 115], [190, 188, 185],
                [240, 238, 232], [95, 60, 35], [150, 95, 50], [205, 130, 60],
                [225, 190, 140], [180, 150, 110]], dtype=float)
PINK = np.array([225, 140, 150], dtype=float)


def _col(c, rng, jitter=18):
    return tuple(int(v) for v in np.clip(np.asarray(c) + rng.normal(0, jitter, 3), 0, 255))


def _ellipse(cx, cy, rx, ry, rot=0.0, n=28):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(rot), math.sin(rot)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], 1)


def _background(rng, w, h):
    """Two-colour gradient plus low-frequency colour noise (walls, grass, sofas...).
    It is smooth, so it is computed at 1/8 size and upsampled for speed."""
    sw, sh = max(2, w // 8), max(2, h // 8)
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    a = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    t = xx * math.cos(a) + yy * math.sin(a)
    t = (t - t.min()) / (np.ptp(t) + 1e-6)
    img = c1 + t[..., None] * (c2 - c1)
    k = rng.integers(3, 16)
    blobs = rng.integers(0, 256, (k, k, 3), dtype=np.uint8)
    blobs = np.asarray(Image.fromarray(blobs).resize((sw, sh), Image.BICUBIC), np.float32) - 128
    blobs = blobs * rng.uniform(0.2, 1.0) + blobs.mean(2, keepdims=True) * rng.uniform(0, 0.8)  # tame saturation
    img = img + rng.uniform(0.1, 0.6) * blobs
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)


def _distractors(draw, rng, w, h, n):
    """Random shapes -- triangles and ellipses included, so ear/head-like
    shapes are not evidence for either class."""
    for _ in range(n):
        col = _col(FUR[rng.integers(len(FUR))] if rng.random() < 0.5 else rng.uniform(0, 255, 3), rng)
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.03, 0.2) * min(w, h)
        kind = rng.integers(4)
        if kind == 0:
            pts = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in rng.uniform(0, 2 * np.pi, 3)]
            draw.polygon(pts, fill=col)
        elif kind == 1:
            draw.polygon([tuple(p) for p in _ellipse(cx, cy, r, r * rng.uniform(0.3, 1), rng.uniform(0, 3))], fill=col)
        elif kind == 2:
            draw.rectangle([cx - r, cy - r * rng.uniform(0.2, 1), cx + r, cy + r], fill=col)
        else:
            draw.line([(cx, cy), (cx + rng.uniform(-2, 2) * r, cy + rng.uniform(-2, 2) * r)], fill=col,
                      width=int(rng.uniform(2, 0.3 * r + 3)))


def _fur_layer(rng, w, h, fur, scale):
    """Fur fill, optionally spotted or striped (both classes alike)."""
    layer = Image.new("RGB", (w, h), fur)
    d = ImageDraw.Draw(layer)
    other = _col(FUR[rng.integers(len(FUR))], rng)
    pattern = rng.integers(3)
    if pattern == 1:  # spots
        for _ in range(int(rng.integers(20, 60))):
            x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.1, 0.3) * scale
            d.ellipse([x - r, y - r, x + r, y + r], fill=other)
    elif pattern == 2:  # stripes
        a, step = rng.uniform(0, np.pi), rng.uniform(0.25, 0.45) * scale
        dx, dy = math.cos(a) * 2 * max(w, h), math.sin(a) * 2 * max(w, h)
        for k in np.arange(-max(w, h), 2 * max(w, h), step):
            px, py = k * -math.sin(a), k * math.cos(a)
            d.line([(px - dx, py - dy), (px + dx, py + dy)], fill=other, width=max(1, int(step * 0.4)))
    return layer


class _AnimalDraw:
    """Draws on the image and, in white, on the animal's extent mask. Each call's arguments (some draw from the
    RNG) are evaluated once, as before, so the RNG and the image stay exactly what they were without the mask."""

    def __init__(self, img, extent):
        self.img, self.extent = ImageDraw.Draw(img), ImageDraw.Draw(extent)

    def polygon(self, xy, fill=None, outline=None, width=1):
        self.img.polygon(xy, fill=fill, outline=outline, width=width)
        # fill and outline apart: given both as 255, PIL would draw the fill only, and a wide outline is not
        # guaranteed to stay inside it
        if fill is not None:
            self.extent.polygon(xy, fill=255)
        if outline is not None:
            self.extent.polygon(xy, outline=255, width=width)

    def line(self, xy, fill=None, width=0):
        self.img.line(xy, fill=fill, width=width)
        self.extent.line(xy, fill=255, width=width)


def _animal(img, rng, cls, w, h):
    """Draw the animal; coordinates are in head radii, y pointing down. Returns its bounding box on the canvas
    (x0, y0, x1, y1, x1 and y1 exclusive), or None if none of it is on the canvas."""
    short = min(w, h)
    # dog ears and muzzle widen the silhouette; 0.9 matches the mean covered area to the cats'
    R = rng.uniform(0.3, 0.8) * short / 2.6 * (1.0 if cls == 0 else 0.9)
    ang, mirror, yaw = rng.uniform(-0.52, 0.52), rng.choice([-1, 1]), rng.uniform(-0.25, 0.25)
    margin = 1.3 * R if rng.random() < 0.85 else 0.7 * R  # sometimes cropped by the border
    cx = rng.uniform(min(margin, w / 2), max(w - margin, w / 2))
    cy = rng.uniform(min(margin, h / 2), max(h - margin, h / 2))
    ca, sa = math.cos(ang), math.sin(ang)

    def T(p, depth=0.0):
        p = np.atleast_2d(p).astype(float)
        x, y = mirror * (p[:, 0] + yaw * depth), p[:, 1]  # nearer features shift more with yaw
        return [(cx + R * (ca * a - sa * b), cy + R * (sa * a + ca * b)) for a, b in zip(x, y)]

    fur = _col(FUR[rng.integers(len(FUR))], rng)
    light = _col(np.array(fur) * 0.4 + 0.6 * 235, rng, 10)  # muzzle / cheek patch
    dark = tuple(int(v * 0.55) for v in fur)
    outline = (20, 18, 16) if rng.random() < 0.7 else None
    lw = max(1, int(0.05 * R))
    mask = Image.new("L", img.size, 0)
    m = ImageDraw.Draw(mask)  # silhouette, filled with (patterned) fur in one go
    if rng.random() < 0.6:  # body and tail, identical for both classes
        m.polygon(T(_ellipse(rng.uniform(-0.4, 0.4), 1.9, 1.1, 1.2, rng.uniform(-0.4, 0.4))), fill=255)
        side = rng.choice([-1, 1])
        tail = [(side * (1.0 + 0.5 * t), 2.3 - 1.6 * t + 0.4 * math.sin(4 * t)) for t in np.linspace(0, 1, 8)]
        m.line(T(tail), fill=255, width=int(0.22 * R), joint="curve")
    if cls == 0:  # cat: rounder head, pointed ears on top
        head = _ellipse(0, 0, 1.0, 0.88)
        ears = []
        for s in (-1, 1):
            tip_a, spread = rng.uniform(0.45, 0.8), rng.uniform(0.28, 0.4)
            base = [(s * math.sin(tip_a + d), -0.88 * math.cos(tip_a + d)) for d in (-spread, spread)]
            L = rng.uniform(1.6, 1.95)
            ears.append(np.array([base[0], (s * L * math.sin(tip_a), -L * math.cos(tip_a)), base[1]]))
        for e in ears:
            m.polygon(T(e), fill=255)
    else:  # dog: slightly longer head; ears are drawn over it below
        head = _ellipse(0, 0.05, 0.9, 1.0)
    m.polygon(T(head), fill=255)
    img.paste(_fur_layer(rng, *img.size, fur, R), mask=mask)
    extent = mask.copy()  # the silhouette, and below every part drawn over it; the occluder is not the animal
    d = _AnimalDraw(img, extent)
    if outline:
        for part in ([head] + ears if cls == 0 else [head]):
            d.polygon(T(part), outline=outline, width=lw)

    if cls == 0:
        for e in ears:
            inner = e * 0.75 + e.mean(0) * 0.25
            d.polygon(T(inner), fill=_col(PINK, rng) if rng.random() < 0.7 else dark)
        if rng.random() < 0.5:
            for s in (-1, 1):
                d.polygon(T(_ellipse(s * 0.25, 0.42, 0.3, 0.22), 1), fill=light)
        d.polygon(T([(-0.1, 0.22), (0.1, 0.22), (0, 0.34)], 1), fill=_col(PINK, rng) if rng.random() < 0.5 else dark)
        d.line(T([(-0.18, 0.5), (0, 0.36), (0.18, 0.5)], 1), fill=dark, width=lw)
        wc = (240, 240, 240) if rng.random() < 0.5 else (30, 30, 30)
        for s in (-1, 1):
            for k in range(3):
                d.line(T([(s * 0.3, 0.38), (s * 1.45, 0.18 + 0.2 * k + rng.uniform(-.05, .05))], 1), fill=wc,
                       width=max(1, lw // 2))
    else:
        ear_col = fur if rng.random() < 0.5 else dark
        for s in (-1, 1):
            ear = _ellipse(s * rng.uniform(0.85, 1.0), rng.uniform(0.25, 0.45), 0.32, rng.uniform(0.8, 1.0),
                           s * rng.uniform(0.05, 0.35))
            d.polygon(T(ear), fill=ear_col, outline=outline, width=lw)
        if rng.random() < 0.6:
            d.polygon(T(_ellipse(0.05, 0.98, 0.15, 0.22), 1), fill=_col(PINK * 0.95, rng))
        d.polygon(T(_ellipse(0, 0.62, 0.52, 0.4), 1), fill=light if rng.random() < 0.7 else fur,
                  outline=outline, width=lw)
        d.polygon(T(_ellipse(0, 0.42, 0.2, 0.13), 1.2), fill=(20, 18, 18))
        d.line(T([(0, 0.5), (0, 0.72), (-0.2, 0.82)], 1), fill=dark, width=lw)
        d.line(T([(0, 0.72), (0.2, 0.82)], 1), fill=dark, width=lw)
    iris = _col([[70, 140, 60], [190, 150, 40], [90, 60, 30], [60, 110, 170]][rng.integers(4)], rng)
    for s in (-1, 1):
        d.polygon(T(_ellipse(s * 0.38, -0.12, 0.16, 0.12 if cls == 0 else 0.15), 0.6), fill=iris)
        pupil = _ellipse(s * 0.38, -0.12, 0.04 if cls == 0 else 0.08, 0.11 if cls == 0 else 0.08)
        d.polygon(T(pupil, 0.6), fill=(10, 10, 10))

    if rng.random() < 0.3:  # occluder over ONE side or the bottom: some class evidence always survives
        where = rng.integers(3)
        ox, oy = [(-1.1, 0.3), (1.1, 0.3), (0, 1.3)][where]
        ow, oh = (0.5, 1.2) if where < 2 else (1.3, 0.45)
        col = _col(rng.uniform(0, 255, 3), rng)
        poly = np.array([(ox - ow, oy - oh), (ox + ow, oy - oh), (ox + ow, oy + oh), (ox - ow, oy + oh)])
        if rng.random() < 0.5:
            poly = _ellipse(ox, oy, ow * 1.1, oh * 1.1, n=12) + rng.normal(0, 0.08, (12, 2))  # plant-like blob
        ImageDraw.Draw(img).polygon(T(poly), fill=col)
    return extent.getbbox()


def _render(rng, cls):
    aspect = math.exp(rng.uniform(math.log(0.6), math.log(1.8)))
    short = rng.uniform(160, 400)
    w, h = (short * aspect, short) if aspect >= 1 else (short, short / aspect)
    w, h = int(min(w, 520)), int(min(h, 520))
    W, H = w * SS, h * SS
    img = _background(rng, W, H)
    _distractors(ImageDraw.Draw(img), rng, W, H, int(rng.integers(1, 8)))
    if rng.random() < 0.6:  # shallow depth of field: the animal is usually the sharpest thing
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(1, 3) * SS))
    box = _animal(img, rng, cls, W, H)
    if rng.random() < 0.3:
        _distractors(ImageDraw.Draw(img), rng, W, H, int(rng.integers(1, 3)))  # foreground clutter
    img = img.reduce(SS)

    # Lighting: brightness, contrast, colour temperature and a shading gradient.
    a = np.asarray(img, np.float32)
    mean = a.mean()
    a = (a - mean) * rng.uniform(0.7, 1.3) + mean * rng.uniform(0.7, 1.25)
    t = rng.uniform(-0.12, 0.12)
    a *= np.array([1 + t, 1, 1 - t], np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    g = rng.uniform(0, 2 * np.pi)
    a *= (1 + rng.uniform(0, 0.6) * ((xx * math.cos(g) + yy * math.sin(g)) / max(w, h) - 0.5))[..., None]
    a += rng.normal(0, rng.uniform(0, 8), a.shape).astype(np.float32)
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    if box is not None:  # every pixel of the reduced image that any drawn pixel falls in
        x0, y0, x1, y1 = box
        box = (x0 // SS, y0 // SS, min(w, -(-x1 // SS)), min(h, -(-y1 // SS)))
    return img, box


def _write_one(job):
    """Write one JPEG; return its row of the boxes file (BOX_COLUMNS), or None if the animal left the canvas."""
    out_dir, seed, cls, i = job
    rng = np.random.default_rng([seed, cls, i])
    img, box = _render(rng, cls)
    name = f"{CLASSES[cls]}/{CLASSES[cls]}.{i:05d}.jpg"
    path = pathlib.Path(out_dir) / name
    img.save(path, "JPEG", quality=int(rng.integers(70, 96)))
    if box is None:
        return None
    return (name, hashlib.sha256(path.read_bytes()).hexdigest(), *img.size, *box)


def write_boxes(path: pathlib.Path, rows) -> None:
    """The boxes file beside the dataset (not inside it, so the dataset's files and DVC hash stay the same)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(BOX_COLUMNS)
    writer.writerows(row for row in rows if row is not None)
    write_text(path, text.getvalue())


def generate(out_dir: pathlib.Path, n_images: int, seed: int, workers: int = 1) -> list[tuple]:
    """Write n_images JPEGs, half cats half dogs, as out_dir/cat/cat.00000.jpg ... and out_dir/dog/dog.00000.jpg ...
    Returns one row (BOX_COLUMNS) per image, cats then dogs in file order, for write_boxes: None where the animal
    is off the canvas (it never is: its head's centre is always on it)."""
    out_dir = pathlib.Path(out_dir)
    for name in CLASSES:
        (out_dir / name).mkdir(parents=True, exist_ok=True)
    n_cat = (n_images + 1) // 2  # an odd extra image goes to the cats
    jobs = [(str(out_dir), seed, 0, i) for i in range(n_cat)]
    jobs += [(str(out_dir), seed, 1, i) for i in range(n_images - n_cat)]
    if workers > 1:
        with get_context("spawn").Pool(workers) as pool:  # fork can hang where threads already run
            return pool.map(_write_one, jobs, chunksize=16)  # in the order of jobs
    return [_write_one(job) for job in jobs]
