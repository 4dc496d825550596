"""Problems found in a source dataset: each one names the file (and line) and what was done about it."""

import collections
import dataclasses
import logging

# Issue kinds. The action taken for each is fixed and documented in `ACTIONS`.
UNREADABLE_IMAGE = "unreadable_image"
MISSING_IMAGE = "missing_image"
MISSING_LABEL_FILE = "missing_label_file"
EMPTY_LABEL_FILE = "empty_label_file"
ORPHAN_LABEL_FILE = "orphan_label_file"
DUPLICATE_FILE_NAME = "duplicate_file_name"
CLASS_OUT_OF_RANGE = "class_out_of_range"
TOO_FEW_POINTS = "too_few_points"
ODD_COORDINATE_COUNT = "odd_coordinate_count"
NOT_A_NUMBER = "not_a_number"
COORDS_CLIPPED = "coords_clipped"
COORDS_OUT_OF_RANGE = "coords_out_of_range"
BAD_ANNOTATION = "bad_annotation"

ACTIONS = {
    UNREADABLE_IMAGE: "image skipped",
    MISSING_IMAGE: "image skipped",
    MISSING_LABEL_FILE: "kept as a background image (no objects)",
    EMPTY_LABEL_FILE: "kept as a background image (no objects)",
    ORPHAN_LABEL_FILE: "label file ignored (no image)",
    DUPLICATE_FILE_NAME: "later duplicate skipped",
    CLASS_OUT_OF_RANGE: "object skipped",
    TOO_FEW_POINTS: "object skipped",
    ODD_COORDINATE_COUNT: "object skipped",
    NOT_A_NUMBER: "object skipped",
    COORDS_CLIPPED: "coordinates clipped to [0, 1]",
    COORDS_OUT_OF_RANGE: "object skipped",
    BAD_ANNOTATION: "object skipped",
}

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
    """Every problem met while reading a source, plus how many images/objects made it through."""

    issues: list[Issue] = dataclasses.field(default_factory=list)
    images: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # per split
    objects: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # per split

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
        lines = [
            f"{split}: {self.images[split]} images, {self.objects[split]} objects"
            for split in sorted(self.images)
        ]
        if not self.issues:
            lines.append("no problems found")
        for kind, n in sorted(self.counts().items()):
            lines.append(f"{kind}: {n} ({ACTIONS[kind]}), e.g. {self.of_kind(kind)[0]}")
        return "\n".join(lines)
