"""Problems found in a source dataset: each one names the file (and line) and what was done about it.

Problems that lose one image or object are counted in a `BuildReport`; problems that stop the whole
build raise `SourceError`, whose message is one line naming the file (and annotation id).
"""

import collections
import dataclasses
import logging

from lmsfa_jax.errors import InputError


class SourceError(InputError):
    """The source (or the requested build) cannot be built; str() is one line naming the file."""


# Issue kinds. The action taken for each is fixed and documented in `ACTIONS`.
UNREADABLE_IMAGE = "unreadable_image"
IMAGE_TOO_LARGE = "image_too_large"
MISSING_IMAGE = "missing_image"
MISSING_LABEL_FILE = "missing_label_file"
EMPTY_LABEL_FILE = "empty_label_file"
ORPHAN_LABEL_FILE = "orphan_label_file"
ORPHAN_ANNOTATION = "orphan_annotation"
DUPLICATE_FILE_NAME = "duplicate_file_name"
CLASS_OUT_OF_RANGE = "class_out_of_range"
TOO_FEW_POINTS = "too_few_points"
ODD_COORDINATE_COUNT = "odd_coordinate_count"
NOT_A_NUMBER = "not_a_number"
NON_FINITE_COORDS = "non_finite_coords"
COORDS_CLIPPED = "coords_clipped"
COORDS_OUT_OF_RANGE = "coords_out_of_range"
DEGENERATE_POLYGON = "degenerate_polygon"
BAD_ANNOTATION = "bad_annotation"
SPLIT_LEAK_SAME_CONTENT = "split_leak_same_content"
SPLIT_LEAK_SAME_NAME = "split_leak_same_name"

ACTIONS = {
    UNREADABLE_IMAGE: "image skipped",
    IMAGE_TOO_LARGE: "image skipped",
    MISSING_IMAGE: "image skipped",
    MISSING_LABEL_FILE: "kept as a background image (no objects)",
    EMPTY_LABEL_FILE: "kept as a background image (no objects)",
    ORPHAN_LABEL_FILE: "label file ignored (no image)",
    ORPHAN_ANNOTATION: "annotation ignored (no image)",
    DUPLICATE_FILE_NAME: "later duplicate skipped",
    CLASS_OUT_OF_RANGE: "object skipped",
    TOO_FEW_POINTS: "polygon skipped",
    ODD_COORDINATE_COUNT: "polygon skipped",
    NOT_A_NUMBER: "object skipped",
    NON_FINITE_COORDS: "polygon skipped",
    COORDS_CLIPPED: "coordinates clipped to the image",
    COORDS_OUT_OF_RANGE: "polygon skipped",
    DEGENERATE_POLYGON: "polygon skipped",
    BAD_ANNOTATION: "object skipped",
    SPLIT_LEAK_SAME_CONTENT: "kept in both splits: remove one copy to stop the leak",
    SPLIT_LEAK_SAME_NAME: "kept in both splits: check they are different images",
}
# An object whose every polygon is skipped is skipped with it (YOLO lines hold one polygon each).

_LOGGED_PER_KIND = 10


@dataclasses.dataclass(frozen=True)
class Issue:
    kind: str
    path: str
    line: int | None  # 1-based line in a label file; annotation id for COCO; None when not applicable.
    message: str

    def __str__(self):
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message} ({ACTIONS[self.kind]})"


@dataclasses.dataclass
class BuildReport:
    """Every problem met while reading a source, plus how many images/objects made it through.

    `class_names` are the stored class names; `reused` is True when an existing build of the same
    source was kept instead of rebuilt (the report is then the one stored with that build).
    """

    issues: list[Issue] = dataclasses.field(default_factory=list)
    images: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # per split
    objects: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # per split
    class_names: list[str] = dataclasses.field(default_factory=list)
    reused: bool = False

    def add(self, kind: str, path, line: int | None, message: str) -> None:
        issue = Issue(kind, str(path), line, message)
        self.issues.append(issue)
        if sum(i.kind == kind for i in self.issues) <= _LOGGED_PER_KIND:
            logging.warning("%s", issue)

    def counts(self) -> dict[str, int]:
        return dict(collections.Counter(i.kind for i in self.issues))

    def of_kind(self, kind: str) -> list[Issue]:
        return [i for i in self.issues if i.kind == kind]

    def summary(self) -> str:
        lines = ["reused the existing build: its source and class names are unchanged"] if self.reused else []
        if self.class_names:
            lines.append(f"classes: {', '.join(self.class_names)}")
        lines += [
            f"{split}: {self.images[split]} images, {self.objects[split]} objects"
            for split in sorted(self.images)
        ]
        if not self.issues:
            lines.append("no problems found")
        for kind, n in sorted(self.counts().items()):
            lines.append(f"{kind}: {n} ({ACTIONS[kind]}), e.g. {self.of_kind(kind)[0]}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        """A JSON-serialisable dict (without `reused`, which describes one call, not the build)."""
        return {
            "class_names": list(self.class_names),
            "images": dict(self.images),
            "objects": dict(self.objects),
            "issues": [dataclasses.asdict(i) for i in self.issues],
        }

    @classmethod
    def from_json(cls, data: dict, reused: bool = False) -> "BuildReport":
        return cls(
            issues=[Issue(**i) for i in data["issues"]],
            images=collections.Counter(data["images"]),
            objects=collections.Counter(data["objects"]),
            class_names=list(data["class_names"]),
            reused=reused,
        )
