"""What the paths of a source say: image files, split (train/val/test), patient and frame."""

import pathlib
import re

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def is_image(path: pathlib.PurePath) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def split_of(rel_path: pathlib.PurePath) -> str | None:
    """The split named by a path: a component (or a COCO file stem part) such as train/val/valid/test."""
    for part in rel_path.parts:
        words = re.split(r"[^a-z]+", part.lower())
        for word in words:
            if word in SPLIT_ALIASES:
                return SPLIT_ALIASES[word]
    return None


def patient_and_frame(rel_path: pathlib.PurePath) -> tuple[str, int]:
    """(patient_id, frame_id) when the name carries them: `.../<patient>/<frame>.jpg` or `<patient>_<frame>.jpg`."""
    stem = rel_path.stem
    parent = rel_path.parent.name
    if (
        parent
        and split_of(pathlib.PurePath(parent)) is None
        and parent not in ("images", "labels")
        and stem.isdigit()
    ):
        return parent, int(stem)
    match = re.fullmatch(r"(.*?[A-Za-z].*?)[_\- ]+(\d+)", stem)
    if match:
        return match.group(1), int(match.group(2))
    return "", -1
