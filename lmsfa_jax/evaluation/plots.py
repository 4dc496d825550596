"""Pictures of results: PR curves, instance overlays and training curves (PNG files).

Matplotlib runs on the Agg backend (no display); overlays are drawn with OpenCV on RGB uint8.
"""
import dataclasses
import json
import pathlib

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Distinct RGB colours, one per class (cycled).
PALETTE = np.array([(255, 56, 56), (50, 205, 50), (255, 178, 29), (26, 147, 255), (207, 61, 255),
                    (0, 212, 187), (255, 112, 31), (146, 204, 23)], np.uint8)


def class_colour(label):
    return tuple(int(c) for c in PALETTE[int(label) % len(PALETTE)])


def plot_pr_curves(curves, class_names, path, title="Precision-recall (IoU 0.5)"):
    """PR curves per class and their mean from `coco.ap_per_class` curves -> PNG at `path`.

    curves["confidence"] (1000,) doubles as the recall grid; curves["pr"] (nc, 1000).
    """
    recall, pr = curves["confidence"], np.asarray(curves["pr"])
    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    for k, name in enumerate(class_names):
        ax.plot(recall, pr[k], lw=1.2, color=np.array(class_colour(k)) / 255,
                label=f"{name} {np.trapezoid(pr[k], recall):.3f}")
    ax.plot(recall, pr.mean(axis=0), lw=2.5, color="navy", label=f"all {np.trapezoid(pr.mean(0), recall):.3f}")
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return pathlib.Path(path)


_FONT = cv2.FONT_HERSHEY_SIMPLEX
MAX_LABELS = 12  # named labels beyond this many instances turn an overlay into a wall of text


@dataclasses.dataclass(frozen=True)
class OverlayStyle:
    """Sizes, in pixels of the canvas drawn on, that scale with it (see `overlay_style`)."""
    line: int  # box and contour width
    font_scale: float  # OpenCV Hershey simplex scale: a capital is about 27 * font_scale px tall
    font_weight: int  # stroke width of the text
    pad: int  # space around text inside label chips and the legend


def overlay_style(height, width):
    """Line width and text size for a (height, width) canvas, from its shorter side: capitals about
    1/55 of it (at least 10 px, the legible minimum), lines 1/700 (at least 1 px). 160 px -> 10 px text,
    1 px lines; 640 px -> 12 px, 1 px; 1280 px -> 23 px, 2 px."""
    side = min(height, width)
    font_scale = max(0.36, side / 1500)
    return OverlayStyle(line=max(1, round(side / 700)), font_scale=font_scale,
                        font_weight=1 if font_scale < 0.75 else 2, pad=max(1, round(4 * font_scale)))


def _chip_size(text, style):
    """(width, height, baseline) of a text chip with padding."""
    (width, height), baseline = cv2.getTextSize(text, _FONT, style.font_scale, style.font_weight)
    return width + 2 * style.pad, height + baseline + 2 * style.pad, baseline


def _overlaps(rect, others):
    x0, y0, x1, y1 = rect
    return any(x0 < b1 and b0 < x1 and y0 < c1 and c0 < y1 for b0, c0, b1, c1 in others)


def place_labels(boxes, texts, style, height, width, order, obstacles=(), limit=None, max_area_fraction=0.2):
    """Greedy, non-overlapping label chips: instances in `order` (best first) each take the first
    free spot of: above its box, inside its top edge, below it, inside its bottom edge (left-aligned,
    then right-aligned), shifted onto the canvas. A label with no free spot is skipped, and so are all
    labels after `limit` placed ones or beyond a total chip area of `max_area_fraction` of the canvas.

    boxes (D, 4) xyxy; texts (D,) strings; obstacles: rects (x0, y0, x1, y1) labels must avoid.
    Returns {instance index: chip rect (x0, y0, x1, y1)} for the labels placed.
    """
    placed, taken, area = {}, list(obstacles), 0
    for i in order:
        if limit is not None and len(placed) >= limit:
            break
        chip_w, chip_h, _ = _chip_size(texts[i], style)
        if chip_w > width or chip_h > height or area + chip_w * chip_h > max_area_fraction * height * width:
            continue
        x0, y0, x1, y1 = (int(round(v)) for v in boxes[i])
        spots = [(min(max(left, 0), width - chip_w), min(max(top, 0), height - chip_h))
                 for top in (y0 - chip_h, y0, y1, y1 - chip_h) for left in (x0, x1 - chip_w)]
        rect = next(((x, y, x + chip_w, y + chip_h) for x, y in spots
                     if not _overlaps((x, y, x + chip_w, y + chip_h), taken)), None)
        if rect is not None:
            placed[int(i)] = rect
            taken.append(rect)
            area += chip_w * chip_h
    return placed


def legend_rows(classes, class_names):
    """[(class, "name (count)")] for the classes present, in class order."""
    present, counts = np.unique(np.asarray(classes, int), return_counts=True)
    return [(int(k), f"{class_names[k]} ({n})") for k, n in zip(present, counts)]


def place_legend(rows, style, occupied):
    """Rect (x0, y0, x1, y1) of the legend in the canvas corner that hides least of `occupied` (H, W) bool
    (instance pixels); None if it does not fit in the canvas."""
    height, width = occupied.shape
    swatch = _chip_size("Ag", style)[1] - 2 * style.pad
    legend_w = max(_chip_size(text, style)[0] for _, text in rows) + swatch + style.pad
    legend_h = len(rows) * (swatch + style.pad) + style.pad
    if legend_w > width or legend_h > height:
        return None
    corners = [(x, y) for y in (0, height - legend_h) for x in (width - legend_w, 0)]
    x, y = min(corners, key=lambda c: occupied[c[1]:c[1] + legend_h, c[0]:c[0] + legend_w].sum())
    return (x, y, x + legend_w, y + legend_h)


def _text_colour(colour):
    return (0, 0, 0) if 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2] > 150 else (255, 255, 255)


def _put_text(canvas, text, left, top, style, colour):
    _, chip_h, baseline = _chip_size(text, style)
    cv2.putText(canvas, text, (left + style.pad, top + chip_h - style.pad - baseline), _FONT, style.font_scale,
                colour, style.font_weight, cv2.LINE_AA)


def _draw_legend(canvas, rows, rect, style):
    x0, y0, x1, y1 = rect
    canvas[y0:y1, x0:x1] = (canvas[y0:y1, x0:x1] * 0.35).astype(np.uint8)  # dark translucent panel
    swatch = _chip_size("Ag", style)[1] - 2 * style.pad
    for row, (label, text) in enumerate(rows):
        top = y0 + style.pad + row * (swatch + style.pad)
        cv2.rectangle(canvas, (x0 + style.pad, top), (x0 + style.pad + swatch - 1, top + swatch - 1),
                      class_colour(label), -1)
        _put_text(canvas, text, x0 + swatch + style.pad, top - style.pad, style, (255, 255, 255))


def _upscale(image, boxes, masks, min_side):
    """Image, boxes and masks resized so that the shorter side is `min_side`."""
    height, width = image.shape[:2]
    factor = min_side / min(height, width)
    size = (round(width * factor), round(height * factor))
    image = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)
    boxes = boxes * np.array([size[0] / width, size[1] / height] * 2, np.float32)
    if masks is not None:  # smooth outlines: interpolate, blur away the staircase, threshold at one half
        masks = np.array([cv2.GaussianBlur(cv2.resize(m.astype(np.float32), size), (0, 0), factor / 3) > 0.5
                          for m in masks], bool).reshape(-1, size[1], size[0])
    return image, boxes, masks


def _tint_mask(canvas, occupied, mask, colour, alpha, line):
    """Blends `colour` into canvas under mask (H, W) bool, outlines it, marks it in `occupied`; works
    on the mask's bounding rectangle only."""
    mask_u8 = mask.view(np.uint8)
    x, y, w, h = cv2.boundingRect(mask_u8)
    if w == 0:
        return
    crop, inside = canvas[y:y + h, x:x + w], mask[y:y + h, x:x + w]
    occupied[y:y + h, x:x + w] |= inside
    crop[inside] = (crop[inside] * (1 - alpha) + np.array(colour, np.float32) * alpha).astype(np.uint8)
    contours, _ = cv2.findContours(mask_u8[y:y + h, x:x + w], cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                   offset=(x, y))
    cv2.drawContours(canvas, contours, -1, colour, line)


@dataclasses.dataclass(frozen=True)
class OverlayLayout:
    """Where an overlay's text goes, in canvas pixels."""
    labels: dict  # instance index -> (text, chip rect (x0, y0, x1, y1))
    legend: tuple | None  # legend rect (x0, y0, x1, y1); None when every instance has a named label
    legend_rows: list  # [(class, "name (count)")] for the classes present


def layout_overlay(boxes, classes, scores, class_names, style, occupied, max_labels=MAX_LABELS):
    """Every instance gets a "name score" label when there are at most `max_labels` and all fit without
    overlapping. Otherwise the scene is dense: a legend (class colour -> name and count) goes in the
    corner of the canvas that hides least of `occupied` (H, W) bool (instance pixels), if it fits, and
    the best `max_labels` instances whose chips fit get a score-only chip in their class colour.
    boxes (D, 4) xyxy, classes (D,), scores (D,) in canvas pixels; `style` from `overlay_style`.
    """
    height, width = occupied.shape
    order = np.argsort(-np.asarray(scores), kind="stable")
    names = [f"{class_names[k]} {s:.2f}" for k, s in zip(classes, scores)]
    rows = legend_rows(classes, class_names)
    if len(names) <= max_labels:
        placed = place_labels(boxes, names, style, height, width, order)
        if len(placed) == len(names):
            return OverlayLayout({i: (names[i], rect) for i, rect in placed.items()}, None, rows)
    legend = place_legend(rows, style, occupied)
    short = [f"{s:.2f}" for s in scores]
    placed = place_labels(boxes, short, style, height, width, order, obstacles=[legend] if legend else [],
                          limit=max_labels)
    return OverlayLayout({i: (short[i], rect) for i, rect in placed.items()}, legend, rows)


def draw_instances(image, boxes, classes, scores, masks, class_names, alpha=0.45, min_side=None,
                   max_labels=MAX_LABELS):
    """Overlay of instances on an RGB uint8 image (H, W, 3) -> new RGB uint8 image, (H, W, 3) by default.

    boxes (D, 4) xyxy, classes (D,), scores (D,), masks (D, H, W) binary (or None), all in the image's
    pixels. Masks are tinted in the class colour (as in the PR plots) with a contour, best score on top;
    boxes are thin; line widths and text scale with the image (`overlay_style`). Labels never overlap:
    up to `max_labels` instances get "name score"; denser scenes get a legend and score-only chips on
    the best instances (`layout_overlay`).

    min_side: if given and the image's shorter side is below it, draw on a copy upscaled to that shorter
    side so that text stays legible on small images; the output is then that larger size.
    """
    canvas = np.ascontiguousarray(image, np.uint8).copy()
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    classes, scores = np.asarray(classes, int).reshape(-1), np.asarray(scores, np.float32).reshape(-1)
    if masks is not None:
        masks = np.asarray(masks).astype(bool)
        if masks.shape != (len(boxes),) + canvas.shape[:2]:
            raise ValueError(f"masks have shape {masks.shape}, expected {(len(boxes),) + canvas.shape[:2]}")
    if min_side is not None and min(canvas.shape[:2]) < min_side:
        canvas, boxes, masks = _upscale(canvas, boxes, masks, min_side)
    height, width = canvas.shape[:2]
    style = overlay_style(height, width)
    occupied = np.zeros((height, width), bool)
    for i in np.argsort(scores, kind="stable"):  # lowest score first, so the best instance ends on top
        colour = class_colour(classes[i])
        x0, y0, x1, y1 = (int(round(v)) for v in boxes[i])
        if masks is None:
            occupied[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
        else:
            _tint_mask(canvas, occupied, masks[i], colour, alpha, style.line)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, style.line)
    layout = layout_overlay(boxes, classes, scores, class_names, style, occupied, max_labels)
    for i, (text, (x0, y0, x1, y1)) in layout.labels.items():
        colour = class_colour(classes[i])
        cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), colour, -1)
        _put_text(canvas, text, x0, y0, style, _text_colour(colour))
    if layout.legend is not None:
        _draw_legend(canvas, layout.legend_rows, layout.legend, style)
    return canvas


def save_rgb(image, path):
    """Writes an RGB uint8 image as PNG/JPEG (by suffix); raises OSError if OpenCV cannot."""
    if not cv2.imwrite(str(path), cv2.cvtColor(np.asarray(image, np.uint8), cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write image {path}")
    return pathlib.Path(path)


def read_jsonl(path):
    """Records of a JSON-lines file; a malformed line raises ValueError naming file and line."""
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{number}: not JSON ({e.msg})") from None
    return records


def plot_training_curves(metrics_jsonl, path, x_key=None):
    """One panel per numeric series of a metrics.jsonl (losses, mAPs, ...) against epoch/step -> PNG.

    x_key defaults to "epoch" if present, else "step", else the record index.
    """
    records = read_jsonl(metrics_jsonl)
    if not records:
        raise ValueError(f"{metrics_jsonl}: no records to plot")
    keys = sorted({k for r in records for k, v in r.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)})
    if x_key is None:
        x_key = next((k for k in ("epoch", "step") if k in keys), None)
    series = [k for k in keys if k != x_key]
    columns = min(4, max(1, len(series)))
    rows = -(-len(series) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), dpi=110, squeeze=False)
    for ax, key in zip(axes.flat, series):
        points = [(r.get(x_key, i) if x_key else i, r[key]) for i, r in enumerate(records) if key in r]
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="." if len(xs) < 50 else None, lw=1.5)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel(x_key or "record", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(series):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return pathlib.Path(path)
