"""Issue 10.1: no .tar/.zip member is written outside its extraction folder; bombs fail cleanly."""

import io
import tarfile
import tempfile
import zipfile

import pytest

import source_files
from lmsfa_jax.data import archives
from lmsfa_jax.data import build
from lmsfa_jax.data import reader
from lmsfa_jax.data import report as report_lib


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    """A tiny YOLO source folder; archives are extracted below tmp_path/tmp (so escapes land in tmp_path)."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return source_files.write_yolo(tmp_path / "src", {"train/x": [f"0 {source_files.TRIANGLE}"]})


def _tar(path, dataset, extra):
    """A .tar of the dataset folder plus `extra` TarInfo members (file contents b"evil")."""
    with tarfile.open(path, "w") as tf:
        tf.add(dataset, arcname="src")
        for info in extra:
            data = b"evil" if info.isreg() else None
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _member(name, kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def _escapes(tmp_path):
    """Files that an unsafe extraction wrote outside its folder (anywhere in tmp_path but the folders made)."""
    return sorted(p.name for p in tmp_path.rglob("*escaped*"))


@pytest.mark.parametrize(
    "members,named",
    [
        ([_member("../escaped.txt")], "../escaped.txt"),
        ([_member("src/../../escaped.txt")], "src/../../escaped.txt"),
        ([_member("ABSOLUTE/escaped.txt")], "escaped.txt"),
        ([_member("out", tarfile.SYMTYPE, "../.."), _member("out/escaped.txt")], "out"),
        ([_member("out", tarfile.SYMTYPE, "ABSOLUTE"), _member("out/escaped.txt")], "out"),
        ([_member("src/escaped_link", tarfile.LNKTYPE, "../escaped_target")], "src/escaped_link"),
    ],
    ids=["dotdot", "nested_dotdot", "absolute", "symlink_up", "symlink_absolute", "hardlink_up"],
)
def test_unsafe_tar_members_are_refused_naming_the_member(tmp_path, dataset, members, named):
    for info in members:  # absolute names point into tmp_path, where an escape is harmless and visible
        info.name = info.name.replace("ABSOLUTE", str(tmp_path / "abs"))
        info.linkname = info.linkname.replace("ABSOLUTE", str(tmp_path / "abs"))
    (tmp_path / "abs").mkdir()
    archive = _tar(tmp_path / "evil.tar", dataset, members)
    with pytest.raises(report_lib.SourceError) as error:
        build.build_dataset(archive, "evil", tmp_path / "tfds")
    message = str(error.value)
    assert "evil.tar" in message and named in message and "\n" not in message
    assert _escapes(tmp_path) == []
    assert list((tmp_path / "tmp").iterdir()) == []  # the extraction folder is removed again


def test_symlink_chain_resolving_outside_is_refused(tmp_path, dataset):
    members = [_member("src/here", tarfile.SYMTYPE, "."), _member("src/up", tarfile.SYMTYPE, "here/../..")]
    archive = _tar(tmp_path / "chain.tar", dataset, members)
    with pytest.raises(report_lib.SourceError, match="src/up"):
        build.build_dataset(archive, "chain", tmp_path / "tfds")


def test_zip_member_with_dotdot_is_refused(tmp_path, dataset):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in dataset.rglob("*"):
            zf.write(path, "src/" + path.relative_to(dataset).as_posix())
        zf.writestr("../escaped.txt", b"evil")
    with pytest.raises(report_lib.SourceError, match=r"evil\.zip: member '\.\./escaped\.txt'"):
        build.build_dataset(archive, "evil", tmp_path / "tfds")


def test_links_inside_the_archive_are_kept_and_it_builds(tmp_path, dataset):
    members = [_member("src/notes/data_link.yaml", tarfile.SYMTYPE, "../data.yaml"),
               _member("src/notes/copy.yaml", tarfile.LNKTYPE, "src/data.yaml")]
    archive = _tar(tmp_path / "fine.tar", dataset, members)
    _, report = build.build_dataset(archive, "fine", tmp_path / "tfds")
    assert report.images["train"] == 1 and not report.issues
    assert len(reader.open_split("fine", tmp_path / "tfds", "train")) == 1


def test_decompression_bomb_stops_at_the_size_bound(tmp_path, dataset, monkeypatch):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(dataset / "data.yaml", "src/data.yaml")
        zf.writestr("src/zeros.bin", bytes(4 << 20))  # 4 MiB of zeros, a few KiB compressed
    assert archive.stat().st_size < 64 << 10
    with pytest.raises(report_lib.SourceError, match=r"bomb\.zip: extracts to more than 1048576 bytes"):
        with archives.opened(archive, max_extracted_bytes=1 << 20):
            pass
    monkeypatch.setattr(archives, "MAX_EXTRACTED_BYTES", 1 << 20)
    with pytest.raises(report_lib.SourceError, match="src/zeros.bin"):
        build.build_dataset(archive, "bomb", tmp_path / "tfds")
    with archives.opened(archive, max_extracted_bytes=8 << 20) as root:  # within the bound: fine
        assert (root / "zeros.bin").stat().st_size == 4 << 20


def test_damaged_archive_is_one_line_naming_it(tmp_path, dataset):
    archive = tmp_path / "cut.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(dataset / "data.yaml", "src/data.yaml")
    archive.write_bytes(archive.read_bytes()[:-30])
    with pytest.raises(report_lib.SourceError, match=r"cut\.zip: cannot extract the archive"):
        build.build_dataset(archive, "cut", tmp_path / "tfds")
