"""What a build was made from, stored with it, so that building the same name again notices a change.

The fingerprint lists every file of the source (a folder's files, hidden ones aside, or the archive
itself) with its size, mtime and SHA-256, plus the class names built. It is written as `FILE_NAME`
into the dataset's version folder together with the build report, so a reused build reports what is
stored. Comparing hashes a file again only when its size or mtime differs from the stored entry.
"""

import hashlib
import json
import os
import pathlib

from lmsfa_jax.data import report as report_lib

FILE_NAME = "lmsfa_source.json"
_CHUNK = 1 << 20


def _files(source: pathlib.Path, exclude: pathlib.Path | None) -> dict[str, pathlib.Path]:
    """Relative POSIX name -> path of the source's files, leaving out hidden ones and `exclude`."""
    if not source.is_dir():
        return {source.name: source}
    excluded = os.path.realpath(exclude) if exclude is not None else None
    found = {}
    for folder, dirs, names in os.walk(source):
        dirs[:] = sorted(
            d for d in dirs
            if not d.startswith(".") and os.path.realpath(os.path.join(folder, d)) != excluded
        )
        for name in names:
            if not name.startswith("."):
                path = pathlib.Path(folder, name)
                found[path.relative_to(source).as_posix()] = path
    return found


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def compute(source, class_names: list[str], exclude=None, previous: dict | None = None) -> dict:
    """The fingerprint of `source` (folder or archive) built with `class_names`.

    `exclude`: a folder inside the source to leave out (the data dir, when it lies there);
    `previous`: a stored fingerprint whose hashes are reused for files with unchanged size and mtime.
    """
    source = pathlib.Path(source).expanduser()
    if not source.exists():
        raise report_lib.SourceError(f"{source}: dataset source does not exist")
    old_files = previous["files"] if previous else {}
    files = {}
    for rel, path in sorted(_files(source, exclude).items()):
        stat = path.stat()
        old = old_files.get(rel)
        unchanged = old and old["size"] == stat.st_size and old["mtime_ns"] == stat.st_mtime_ns
        sha = old["sha256"] if unchanged else _sha256(path)
        files[rel] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}
    return {"source": str(source), "class_names": list(class_names), "files": files}


def difference(stored: dict, current: dict) -> str | None:
    """A one-line description of how two fingerprints differ, or None when the content is the same."""
    old, new = stored["files"], current["files"]
    changed = sorted(
        rel
        for rel in old.keys() | new.keys()
        if (old.get(rel) or {}).get("sha256") != (new.get(rel) or {}).get("sha256")
    )
    parts = []
    if changed:
        kinds = ("new" if rel not in old else "removed" if rel not in new else "changed" for rel in changed)
        examples = ", ".join(f"{rel} ({kind})" for rel, kind in list(zip(changed, kinds))[:3])
        parts.append(f"{len(changed)} files differ, e.g. {examples}")
    if stored["class_names"] != current["class_names"]:
        parts.append(f"class names {current['class_names']} differ from the stored {stored['class_names']}")
    return "; ".join(parts) or None


def save(version_dir, fingerprint: dict, report: report_lib.BuildReport) -> None:
    with open(pathlib.Path(version_dir) / FILE_NAME, "w") as f:
        json.dump({"fingerprint": fingerprint, "report": report.to_json()}, f)


def load(version_dir) -> tuple[dict, report_lib.BuildReport] | None:
    """(fingerprint, build report) stored in a version folder, or None when there is none readable."""
    try:
        with open(pathlib.Path(version_dir) / FILE_NAME) as f:
            data = json.load(f)
        return data["fingerprint"], report_lib.BuildReport.from_json(data["report"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
