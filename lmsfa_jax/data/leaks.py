"""Train/val/test leaks: the same image in two splits, found by identical bytes or by file name."""

import hashlib
import pathlib

from lmsfa_jax.data import report as report_lib


class SplitLeakCheck:
    """Remembers every image of a build and reports those met again in another split."""

    def __init__(self):
        self._by_content = {}  # sha256 -> (split, file_name) first seen
        self._by_name = {}  # base name -> list of (split, file_name)

    def add(self, split: str, file_name: str, image_bytes: bytes, report: report_lib.BuildReport) -> None:
        digest = hashlib.sha256(image_bytes).hexdigest()
        first = self._by_content.setdefault(digest, (split, file_name))
        if first[0] != split:
            report.add(
                report_lib.SPLIT_LEAK_SAME_CONTENT,
                file_name,
                None,
                f"identical bytes to {first[1]} ({split} and {first[0]} splits share this image)",
            )
            return
        named = self._by_name.setdefault(pathlib.PurePath(file_name).name, [])
        other = next(((s, f) for s, f in named if s != split), None)
        named.append((split, file_name))
        if other is not None:
            report.add(
                report_lib.SPLIT_LEAK_SAME_NAME,
                file_name,
                None,
                f"same file name as {other[1]} ({split} and {other[0]} splits)",
            )
