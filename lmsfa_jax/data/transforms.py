"""Image and polygon primitives of the input pipeline (OpenCV/numpy, host side).

Coordinates are continuous pixel-edge coordinates: pixel (i, j) covers [j, j+1) x [i, i+1), so an
image of width W spans x in [0, W]. Polygons are (P, 2) float32 arrays of (x, y).
"""

import cv2
import numpy as np

PAD_VALUE = 114
_SUBPIXEL_BITS = 4  # fixed-point fraction bits for cv2.fillPoly


def letterbox(image: np.ndarray, size: int, pad_value: int = PAD_VALUE):
    """Resizes (H, W, 3) keeping aspect to fit (size, size), pads evenly -> (image_lb, r, (pad_x, pad_y)).

    A point maps as x_lb = x * r + pad_x, y_lb = y * r + pad_y (Ultralytics convention).
    """
    h, w = image.shape[:2]
    r = min(size / h, size / w)
    new_w, new_h = int(round(w * r)), int(round(h * r))
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(pad_value,) * 3)
    return image, r, (left, top)


def resize_long_side(image: np.ndarray, size: int):
    """Resizes so the longer side is `size` -> (image, r); points scale by r."""
    h, w = image.shape[:2]
    r = size / max(h, w)
    if r == 1:
        return image, 1.0
    interpolation = cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, (int(round(w * r)), int(round(h * r))), interpolation=interpolation), r


def random_affine_matrix(
    rng: np.random.Generator,
    out_size: int,
    in_center: tuple[float, float],
    degrees: float,
    translate: float,
    scale: float,
    shear: float,
) -> np.ndarray:
    """(3, 3) matrix: move `in_center` to the origin, rotate/scale, shear, then translate into the output.

    Scale is uniform in [1 - scale, 1 + scale]; the centre lands at out_size * U(0.5 - t, 0.5 + t).
    """
    center = np.array([[1, 0, -in_center[0]], [0, 1, -in_center[1]], [0, 0, 1]], np.float64)
    angle = rng.uniform(-degrees, degrees)
    s = rng.uniform(1 - scale, 1 + scale)
    rotation = np.eye(3)
    rotation[:2] = cv2.getRotationMatrix2D((0, 0), angle, s)
    shearing = np.eye(3)
    shearing[0, 1] = np.tan(np.deg2rad(rng.uniform(-shear, shear)))
    shearing[1, 0] = np.tan(np.deg2rad(rng.uniform(-shear, shear)))
    translation = np.eye(3)
    translation[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_size
    translation[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_size
    return translation @ shearing @ rotation @ center


def warp_image(image: np.ndarray, matrix: np.ndarray, out_size: int) -> np.ndarray:
    """Applies an affine (3, 3) matrix in pixel-edge coordinates -> (out_size, out_size, 3)."""
    # OpenCV samples at pixel centres: conjugate by the half-pixel shift so edges map like points do.
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    unshift = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
    m = (unshift @ matrix @ shift)[:2]
    return cv2.warpAffine(
        image, m, (out_size, out_size), flags=cv2.INTER_LINEAR, borderValue=(PAD_VALUE,) * 3
    )


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(P, 2) points through an affine (3, 3) matrix."""
    return (points @ matrix[:2, :2].T + matrix[:2, 2]).astype(np.float32)


def clip_polygon(points: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Sutherland-Hodgman clip of a (P, 2) polygon to [x0, x1] x [y0, y1]; may return < 3 points."""
    if (
        len(points)
        and points[:, 0].min() >= x0
        and points[:, 1].min() >= y0
        and points[:, 0].max() <= x1
        and points[:, 1].max() <= y1
    ):
        return points
    for axis, bound, keep_below in ((0, x0, False), (0, x1, True), (1, y0, False), (1, y1, True)):
        if len(points) == 0:
            break
        coord = points[:, axis]
        inside = coord <= bound if keep_below else coord >= bound
        if inside.all():
            continue
        nxt = np.roll(points, -1, axis=0)
        nxt_inside = np.roll(inside, -1)
        crossing = inside != nxt_inside
        denom = nxt[:, axis] - coord
        t = np.where(crossing, (bound - coord) / np.where(denom == 0, 1, denom), 0)
        hits = points + t[:, None] * (nxt - points)
        hits[:, axis] = bound
        # For each edge (p -> next): emit p if inside, then the crossing point if the edge crosses.
        out = np.stack([points, hits], axis=1).reshape(-1, 2)
        keep = np.stack([inside, crossing], axis=1).reshape(-1)
        points = out[keep]
    return points.astype(np.float32)


def polygon_area(points: np.ndarray) -> float:
    """Unsigned area of a (P, 2) polygon."""
    if len(points) < 3:
        return 0.0
    return float(cv2.contourArea(points.astype(np.float32)))


def polygons_box(polygons: list[np.ndarray]) -> np.ndarray:
    """(4,) xyxy box around all points of a list of polygons."""
    points = np.concatenate(polygons, axis=0)
    return np.concatenate([points.min(0), points.max(0)]).astype(np.float32)


def rasterize(polygons: list[np.ndarray], height: int, width: int, ratio: int = 1) -> np.ndarray:
    """(height // ratio, width // ratio) uint8 0/1 mask of the union of polygons given in full-size pixels.

    A cell is set when its centre lies inside (OpenCV fill rule), at the reduced resolution directly.
    """
    mask = np.zeros((height // ratio, width // ratio), np.uint8)
    scale = 1 << _SUBPIXEL_BITS
    fixed = [np.round((p / ratio - 0.5) * scale).astype(np.int32) for p in polygons if len(p) >= 3]
    if fixed:
        cv2.fillPoly(mask, fixed, 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    return mask


def hsv_jitter(image: np.ndarray, rng: np.random.Generator, hgain: float, sgain: float, vgain: float):
    """Ultralytics HSV augmentation of an RGB uint8 image with look-up tables (returns a new image)."""
    gains = rng.uniform(-1, 1, 3) * (hgain, sgain, vgain) + 1
    hue, sat, val = cv2.split(cv2.cvtColor(image, cv2.COLOR_RGB2HSV))
    x = np.arange(256, dtype=np.float32)
    lut_hue = ((x * gains[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def flip_lr(image: np.ndarray, polygons: list[list[np.ndarray]]):
    """Mirrors an image and its per-object polygon lists left-right."""
    width = image.shape[1]
    flipped = [
        [np.stack([width - p[:, 0], p[:, 1]], axis=1).astype(np.float32) for p in obj] for obj in polygons
    ]
    return cv2.flip(image, 1), flipped
