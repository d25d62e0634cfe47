"""Uploaded sources: every member checked before enqueue, and again while unpacking."""

import io
import stat
import tarfile
import zipfile

import pytest
from django.core.exceptions import ValidationError

from jobs.source_archive import extract_source, read_member, validate_source


def make_zip(members):
    """members: [(name, bytes)] or [(name, bytes, unix_mode)]."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for member in members:
            name, data = member[0], member[1]
            info = zipfile.ZipInfo(name)
            if len(member) > 2:
                info.external_attr = member[2] << 16
            zf.writestr(info, data)
    buf.seek(0)
    return buf


def make_tar(members):
    """members: [TarInfo-ish dicts]: name, data=b'', type=REGTYPE, linkname=''."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for m in members:
            info = tarfile.TarInfo(m["name"])
            info.type = m.get("type", tarfile.REGTYPE)
            info.linkname = m.get("linkname", "")
            data = m.get("data", b"")
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            info.mode = m.get("mode", 0o644)
            tf.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    buf.seek(0)
    return buf


def test_it_lists_the_files_of_a_good_zip():
    files = validate_source(make_zip([("train.py", b"print(1)"), ("pkg/", b""), ("pkg/util.py", b"x=1")]), "src.zip")
    assert files == ["pkg/util.py", "train.py"]


def test_it_lists_the_files_of_a_good_tarball():
    tar = make_tar([{"name": "./train.py", "data": b"print(1)"}, {"name": "data", "type": tarfile.DIRTYPE}])
    assert validate_source(tar, "src.tar.gz") == ["train.py"]


def test_it_accepts_a_single_script_by_its_base_name():
    assert validate_source(io.BytesIO(b"print('hi')"), "train.py") == ["train.py"]


def test_it_keeps_only_the_base_name_of_an_uploaded_script(tmp_path):
    assert validate_source(io.BytesIO(b"print(1)"), "../../evil.py") == ["evil.py"]
    assert extract_source(io.BytesIO(b"print(1)"), "..\\x\\evil.py", tmp_path) == ["evil.py"]
    assert [p.name for p in tmp_path.iterdir()] == ["evil.py"]


@pytest.mark.parametrize("bad_name", ["train .sh", "x.txt", ".py", "a b.py", "-rf.py", "run.py\x00.sh"])
def test_it_refuses_a_script_with_an_unusable_name(bad_name):
    with pytest.raises(ValidationError):
        validate_source(io.BytesIO(b"print(1)"), bad_name)


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("../x.py", "'..'"),
        ("a/../../x.py", "'..'"),
        ("/etc/passwd", "absolute"),
        ("C:/evil.py", "absolute"),
        ("a\\..\\x.py", "backslash"),
    ],
)
def test_it_refuses_a_zip_member_that_could_escape(name, fragment):
    with pytest.raises(ValidationError) as err:
        validate_source(make_zip([("train.py", b""), (name, b"boom")]), "src.zip")
    message = err.value.messages[0]
    assert fragment in message
    assert repr(name) in message  # the message names the member


def test_it_refuses_a_symlink_in_a_zip():
    archive = make_zip([("train.py", b""), ("link", b"/etc/passwd", stat.S_IFLNK | 0o777)])
    with pytest.raises(ValidationError, match="symbolic link"):
        validate_source(archive, "src.zip")


def test_it_refuses_a_device_file_in_a_zip():
    archive = make_zip([("train.py", b""), ("dev", b"", stat.S_IFCHR | 0o644)])
    with pytest.raises(ValidationError, match="device"):
        validate_source(archive, "src.zip")


@pytest.mark.parametrize(
    "member, fragment",
    [
        ({"name": "link", "type": tarfile.SYMTYPE, "linkname": "../../etc/passwd"}, "link"),
        ({"name": "hard", "type": tarfile.LNKTYPE, "linkname": "/etc/passwd"}, "link"),
        ({"name": "tty", "type": tarfile.CHRTYPE}, "device"),
        ({"name": "fifo", "type": tarfile.FIFOTYPE}, "FIFO"),
        ({"name": "../up.py", "data": b"x"}, "'..'"),
        ({"name": "/abs.py", "data": b"x"}, "absolute"),
    ],
)
def test_it_refuses_links_specials_and_escapes_in_a_tarball(member, fragment):
    archive = make_tar([{"name": "train.py", "data": b"print(1)"}, member])
    with pytest.raises(ValidationError, match=fragment):
        validate_source(archive, "src.tgz")


def test_it_refuses_more_members_than_the_limit(monkeypatch):
    monkeypatch.setenv("TORCHLIGHT_SOURCE_MAX_MEMBERS", "5")
    archive = make_zip([(f"f{i}.py", b"") for i in range(6)])
    with pytest.raises(ValidationError, match="more than 5 members"):
        validate_source(archive, "src.zip")
    assert validate_source(make_zip([(f"f{i}.py", b"") for i in range(5)]), "src.zip")


def test_it_refuses_a_member_over_the_size_limit(monkeypatch):
    monkeypatch.setenv("TORCHLIGHT_SOURCE_MAX_MEMBER_BYTES", "1000")
    archive = make_zip([("train.py", b""), ("weights.bin", b"\0" * 1001)])
    with pytest.raises(ValidationError, match="'weights.bin' is larger than the limit"):
        validate_source(archive, "src.zip")


def test_it_refuses_an_archive_over_the_total_size_limit(monkeypatch):
    monkeypatch.setenv("TORCHLIGHT_SOURCE_MAX_BYTES", "2500")
    archive = make_zip([(f"part{i}.bin", b"\0" * 1000) for i in range(3)])
    with pytest.raises(ValidationError, match="unpacks to more than the limit"):
        validate_source(archive, "src.zip")


def test_it_refuses_duplicate_members():
    with pytest.warns(UserWarning):  # zipfile itself warns about the duplicate
        archive = make_zip([("train.py", b"a"), ("train.py", b"b")])
    with pytest.raises(ValidationError, match="more than once"):
        validate_source(archive, "src.zip")


def test_it_refuses_junk_that_is_not_an_archive():
    with pytest.raises(ValidationError, match="could not be read"):
        validate_source(io.BytesIO(b"not a zip at all"), "src.zip")
    with pytest.raises(ValidationError, match="could not be read"):
        validate_source(io.BytesIO(b"not a tarball"), "src.tar.gz")
    with pytest.raises(ValidationError, match="not a source"):
        validate_source(io.BytesIO(b""), "src.rar")


def test_it_extracts_files_and_folders_inside_the_destination(tmp_path):
    archive = make_zip([("train.py", b"print(1)"), ("pkg/", b""), ("pkg/util.py", b"x=1", stat.S_IFREG | 0o755)])
    written = extract_source(archive, "src.zip", tmp_path / "work")
    assert written == ["pkg/util.py", "train.py"]
    assert (tmp_path / "work" / "train.py").read_bytes() == b"print(1)"
    assert (tmp_path / "work" / "pkg" / "util.py").stat().st_mode & 0o111


def test_it_extracts_a_tarball_from_a_path(tmp_path):
    path = tmp_path / "src.tar.gz"
    path.write_bytes(make_tar([{"name": "a/b/train.py", "data": b"print(2)"}]).getvalue())
    assert extract_source(path, "src.tar.gz", tmp_path / "work") == ["a/b/train.py"]
    assert (tmp_path / "work" / "a" / "b" / "train.py").read_bytes() == b"print(2)"


def test_it_extracts_a_single_script(tmp_path):
    assert extract_source(io.BytesIO(b"print(3)"), "main.py", tmp_path) == ["main.py"]
    assert (tmp_path / "main.py").read_bytes() == b"print(3)"


def test_it_refuses_to_write_through_a_link_already_in_the_destination(tmp_path):
    # Second line of defence: even a clean-looking name may not resolve outside the work dir.
    outside = tmp_path / "outside"
    outside.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    (work / "sub").symlink_to(outside)
    with pytest.raises(ValidationError, match="outside the work folder"):
        extract_source(make_zip([("sub/evil.py", b"x")]), "src.zip", work)
    assert list(outside.iterdir()) == []


def test_it_stops_extracting_a_member_bigger_than_it_claims(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHLIGHT_SOURCE_MAX_BYTES", "1500")
    archive = make_zip([("a.bin", b"\0" * 1000), ("b.bin", b"\0" * 1000)])
    with pytest.raises(ValidationError, match="unpacks to more than the limit"):
        extract_source(archive, "src.zip", tmp_path)


def test_it_reads_one_member():
    archive = make_zip([("train.py", b"print(1)"), ("pkg/util.py", b"x=1")])
    assert read_member(archive, "src.zip", "pkg/util.py") == b"x=1"
    assert read_member(archive, "src.zip", "missing.py") is None
