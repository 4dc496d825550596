"""Polygons from source annotations: checked coordinate lists, and outlines traced from RLE / masks.

Every polygon stored is one the COCO evaluation can rasterise: those covering no pixel (zero area,
collinear points, slivers, also when clipping made them so) are dropped with a counted report line,
since a ground-truth object with an empty mask cannot be matched, even by itself.
"""

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from lmsfa_jax.data import report as report_lib
from lmsfa_jax.data import transforms

COORD_TOLERANCE = 0.01  # coordinates this fraction of the image size outside it are clipped; further: skipped


def checked_polygon(
    coords: np.ndarray,
    height: int,
    width: int,
    normalised: bool,
    report: report_lib.BuildReport,
    path,
    line: int | None,
) -> np.ndarray | None:
    """(P, 2) float32 polygon in pixels from flat (x1, y1, x2, y2, ...) coordinates, or None when skipped.

    `normalised` coordinates are fractions of the image (YOLO), else pixels (COCO). Problems are
    reported against `path`:`line` (a label-file line or a COCO annotation id).
    """
    coords = np.asarray(coords, np.float64).ravel()
    if coords.size % 2:
        report.add(report_lib.ODD_COORDINATE_COUNT, path, line, f"odd number of coordinates ({coords.size})")
        return None
    if coords.size < 6:
        report.add(report_lib.TOO_FEW_POINTS, path, line, f"{coords.size // 2} points, a polygon needs 3")
        return None
    if not np.all(np.isfinite(coords)):
        report.add(report_lib.NON_FINITE_COORDS, path, line, "coordinates hold NaN or infinity")
        return None
    points = coords.reshape(-1, 2)
    extent = np.array([1.0, 1.0] if normalised else [width, height])
    unit = "[0, 1]" if normalised else f"the {width}x{height} image"
    low, high = points.min(0), points.max(0)
    if np.any(low < -COORD_TOLERANCE * extent) or np.any(high > (1 + COORD_TOLERANCE) * extent):
        report.add(
            report_lib.COORDS_OUT_OF_RANGE,
            path,
            line,
            f"coordinates in [{coords.min():.3g}, {coords.max():.3g}] lie outside {unit}",
        )
        return None
    if np.any(low < 0) or np.any(high > extent):
        report.add(
            report_lib.COORDS_CLIPPED,
            path,
            line,
            f"coordinates in [{coords.min():.3g}, {coords.max():.3g}] slightly outside {unit}",
        )
        points = np.clip(points, 0, extent)
    if normalised:
        points = points * [width, height]
    if covers_no_pixel(points, height, width):
        report.add(
            report_lib.DEGENERATE_POLYGON,
            path,
            line,
            f"polygon of area {transforms.polygon_area(points):.3g} px² covers no pixel "
            "(collinear points or a sliver)",
        )
        return None
    return points.astype(np.float32)


def covers_no_pixel(points: np.ndarray, height: int, width: int) -> bool:
    """Whether the (P, 2) pixel polygon rasterises to an empty mask the way COCO evaluation does."""
    rle = mask_utils.frPyObjects([np.asarray(points, np.float64).ravel().tolist()], height, width)
    return int(mask_utils.area(rle)[0]) == 0


def rle_to_polygons(rle: dict, height: int, width: int) -> list[np.ndarray]:
    """Outline polygons (pixel-edge coordinates) of a COCO RLE mask; holes are not kept."""
    if list(rle["size"]) != [height, width]:
        raise ValueError(f"RLE size {rle['size']} differs from the image size {[height, width]}")
    counts = rle["counts"]
    if isinstance(counts, list):
        if sum(counts) != height * width:
            raise ValueError(f"uncompressed RLE counts sum to {sum(counts)}, not {height * width}")
        rle = mask_utils.frPyObjects(rle, height, width)
    elif not counts:
        raise ValueError("empty RLE counts")
    else:
        rle = {
            "size": [height, width],
            "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
        }
    mask = mask_utils.decode(rle)
    return mask_to_polygons(mask)


def mask_to_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """Polygons tracing the outer boundary of each blob of a (H, W) binary mask, in pixel-edge coordinates.

    Each boundary pixel contributes its centre (x + 0.5, y + 0.5), so filling the polygon with the
    same centre convention reproduces the blob (up to thin concavities). A blob one pixel thin, whose
    outline has no area, becomes its bounding pixel rectangle.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    polygons = []
    for contour in contours:
        points = contour[:, 0, :].astype(np.float32) + 0.5
        if transforms.polygon_area(points) == 0:
            x0, y0 = points.min(0) - 0.5
            x1, y1 = points.max(0) + 0.5
            points = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)
        polygons.append(points)
    return polygons
