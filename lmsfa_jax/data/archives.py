"""Opening a dataset source: a folder, or a .zip / .tar / .tar.gz archive extracted safely.

Every member is checked before anything is written: no absolute path, no `..`, no link pointing
outside the extraction folder, no device or pipe, nothing written through a link, and at most
`MAX_EXTRACTED_BYTES` written in all (counted while writing, so a lying header cannot get past it).
An archive that breaks a rule is refused with a `report.SourceError` naming the member.
"""

import contextlib
import dataclasses
import os
import pathlib
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib

from lmsfa_jax.data import report as report_lib

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
MAX_EXTRACTED_BYTES = 64 * 2**30  # an archive that extracts to more is refused (decompression bomb)
_CHUNK = 1 << 20
# What a damaged archive raises (OSError covers bad gzip data and a full disk; RuntimeError an encrypted
# zip member; NotImplementedError an unsupported zip compression method).
_EXTRACTION_ERRORS = (
    tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError, RuntimeError, NotImplementedError
)


def is_archive(path) -> bool:
    return pathlib.Path(path).name.lower().endswith(ARCHIVE_SUFFIXES)


@contextlib.contextmanager
def opened(path, *, max_extracted_bytes: int | None = None):
    """Yields the dataset root folder of a folder or an archive (extracted into a temporary folder).

    `max_extracted_bytes` defaults to `MAX_EXTRACTED_BYTES`.
    """
    path = pathlib.Path(path).expanduser()
    if not path.exists():
        raise report_lib.SourceError(f"{path}: dataset source does not exist")
    if path.is_dir():
        yield _descend(path)
        return
    if not is_archive(path):
        raise report_lib.SourceError(
            f"{path}: dataset source is neither a folder nor a {'/'.join(ARCHIVE_SUFFIXES)} archive"
        )
    limit = MAX_EXTRACTED_BYTES if max_extracted_bytes is None else max_extracted_bytes
    with tempfile.TemporaryDirectory(prefix="lmsfa_source_") as tmp:
        extract(path, pathlib.Path(tmp), limit)
        yield _descend(pathlib.Path(tmp))


def _descend(root: pathlib.Path) -> pathlib.Path:
    """Walks down single-folder wrappers (`archive/PELD/...`) to the folder that holds the data."""
    while True:
        entries = [p for p in root.iterdir() if not p.name.startswith((".", "__MACOSX"))]
        if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
            root = entries[0]
        else:
            return root


@dataclasses.dataclass
class _Member:
    name: str  # normalised relative POSIX path
    kind: str  # "file", "dir", "symlink" or "hardlink"
    link: str = ""  # symlink target as stored; hard link target as a normalised member name
    open: object = None  # () -> binary file object, for files


def extract(archive: pathlib.Path, dest: pathlib.Path, max_bytes: int) -> None:
    """Extracts a .zip or tar archive into the empty folder `dest`, refusing unsafe members."""
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                members = [_zip_member(archive, zf, info) for info in zf.infolist()]
                _write_members(archive, members, dest, max_bytes)
        else:
            with tarfile.open(archive, "r:*") as tf:
                members = [_tar_member(archive, tf, info) for info in tf.getmembers()]
                _write_members(archive, members, dest, max_bytes)
    except _EXTRACTION_ERRORS as error:
        raise report_lib.SourceError(f"{archive}: cannot extract the archive: {error}") from error


def _safe_name(archive, name: str) -> str:
    """The member name as a relative POSIX path; refuses absolute paths and `..`."""
    posix = name.replace("\\", "/")
    if _is_absolute(posix):
        raise report_lib.SourceError(f"{archive}: member {name!r} has an absolute path; refusing the archive")
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise report_lib.SourceError(
            f"{archive}: member {name!r} points outside the extraction folder (`..`); refusing the archive"
        )
    return "/".join(parts)


def _is_absolute(posix_path: str) -> bool:
    return posix_path.startswith("/") or re.match(r"^[A-Za-z]:", posix_path) is not None


def _zip_member(archive, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Member:
    name = _safe_name(archive, info.filename)
    if info.is_dir():
        return _Member(name, "dir")
    if stat.S_ISLNK(info.external_attr >> 16):
        with zf.open(info) as f:
            return _Member(name, "symlink", f.read(4096).decode("utf-8", "replace"))
    return _Member(name, "file", open=lambda: zf.open(info))


def _tar_member(archive, tf: tarfile.TarFile, info: tarfile.TarInfo) -> _Member:
    name = _safe_name(archive, info.name)
    if info.isdir():
        return _Member(name, "dir")
    if info.issym():
        return _Member(name, "symlink", info.linkname)
    if info.islnk():
        target = info.linkname.replace("\\", "/")
        if _is_absolute(target) or ".." in target.split("/"):
            raise report_lib.SourceError(
                f"{archive}: member {info.name!r} is a hard link to {info.linkname!r} outside the extraction "
                "folder; refusing the archive"
            )
        return _Member(name, "hardlink", _safe_name(archive, target))
    if info.isreg():
        return _Member(name, "file", open=lambda: tf.extractfile(info))
    raise report_lib.SourceError(
        f"{archive}: member {info.name!r} is a device, pipe or other special file; refusing the archive"
    )


def _check_symlink(archive, member: _Member) -> None:
    target = member.link.replace("\\", "/")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(member.name), target))
    if _is_absolute(target) or resolved == ".." or resolved.startswith("../"):
        raise report_lib.SourceError(
            f"{archive}: member {member.name!r} is a symbolic link to {member.link!r} outside the extraction "
            "folder; refusing the archive"
        )


def _write_members(archive, members: list[_Member], dest: pathlib.Path, max_bytes: int) -> None:
    for member in members:
        if member.kind == "symlink":
            _check_symlink(archive, member)
    real_dest = os.path.realpath(dest)
    written = 0
    for member in members:
        if member.name:
            written = _write_member(archive, member, real_dest, written, max_bytes)
    for member in members:  # a chain of links may still end outside: check where each one resolves
        real = os.path.realpath(os.path.join(real_dest, member.name))
        if member.kind == "symlink" and real != real_dest and not real.startswith(real_dest + os.sep):
            raise report_lib.SourceError(
                f"{archive}: member {member.name!r} is a symbolic link that resolves outside the "
                "extraction folder; refusing the archive"
            )


def _write_member(archive, member: _Member, real_dest: str, written: int, max_bytes: int) -> int:
    """Writes one member under `real_dest` -> bytes written so far, counting this member."""
    target = pathlib.Path(real_dest, member.name)
    parent = member.name.rpartition("/")[0]
    if parent and not _reached_without_links(real_dest, parent):
        raise report_lib.SourceError(
            f"{archive}: member {member.name!r} would be written through a symbolic link; "
            "refusing the archive"
        )
    if member.kind == "dir":
        target.mkdir(parents=True, exist_ok=True)
        return written
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.is_file():
        target.unlink()
    if member.kind == "symlink":
        os.symlink(member.link, target)
    elif member.kind == "hardlink":
        source = pathlib.Path(real_dest, member.link)
        if not (_reached_without_links(real_dest, member.link) and source.is_file()):
            raise report_lib.SourceError(
                f"{archive}: member {member.name!r} is a hard link to {member.link!r}, which is not a file "
                "extracted before it; refusing the archive"
            )
        written += source.stat().st_size
        _check_size(archive, member, written, max_bytes)
        shutil.copyfile(source, target)
    else:
        with member.open() as src, open(target, "wb") as dst:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                _check_size(archive, member, written, max_bytes)
                dst.write(chunk)
    return written


def _reached_without_links(real_dest: str, name: str) -> bool:
    """Whether the relative POSIX path `name` under `real_dest` resolves to itself (no link on the way)."""
    return os.path.realpath(os.path.join(real_dest, name)) == os.path.join(real_dest, *name.split("/"))


def _check_size(archive, member: _Member, written: int, max_bytes: int) -> None:
    if written > max_bytes:
        raise report_lib.SourceError(
            f"{archive}: extracts to more than {max_bytes} bytes (reached at member {member.name!r}); "
            "refusing the archive (a decompression bomb?); raise archives.MAX_EXTRACTED_BYTES if genuine"
        )
