"""Pictures of results: PR curves, instance overlays and training curves (PNG files).

Matplotlib runs on the Agg backend (no display); overlays are drawn with OpenCV on RGB uint8.
"""
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


def draw_instances(image, boxes, classes, scores, masks, class_names, alpha=0.45):
    """Overlay of instances on an RGB uint8 image (H, W, 3) -> new RGB uint8 image.

    boxes (D, 4) xyxy, classes (D,), scores (D,), masks (D, H, W) binary (or None), all in the
    image's pixels. Masks are tinted in the class colour with a contour; each box is labelled
    "name score".
    """
    canvas = np.ascontiguousarray(image, np.uint8).copy()
    height, width = canvas.shape[:2]
    thickness = max(1, round((height + width) / 600))
    font_scale = max(0.35, (height + width) / 2400)
    if masks is not None:
        for mask, label in zip(masks, classes):
            mask = np.asarray(mask, bool)
            colour = np.array(class_colour(label), np.float32)
            canvas[mask] = (canvas[mask] * (1 - alpha) + colour * alpha).astype(np.uint8)
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(canvas, contours, -1, class_colour(label), thickness)
    for box, label, score in zip(np.asarray(boxes), classes, scores):
        colour = class_colour(label)
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, thickness)
        text = f"{class_names[int(label)]} {float(score):.2f}"
        (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        ty = y0 - th - baseline - 2 if y0 - th - baseline - 2 >= 0 else y0  # inside if no room above
        tx = max(0, min(x0, width - tw - 2))  # keep the label on the image
        cv2.rectangle(canvas, (tx, ty), (tx + tw + 2, ty + th + baseline + 2), colour, -1)
        cv2.putText(canvas, text, (tx + 1, ty + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
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
