"""Checks and extraction for uploaded job sources: one `.py` file, a `.zip` or a `.tar.gz`/`.tgz` folder.

`validate_source` runs before anything is enqueued and names the first bad
member; `extract_source` runs on the node and checks everything again while
writing (the resolved path of every file must stay inside the work dir), so
an archive that slipped past the first check still cannot write outside it.
Links of any kind, device files and FIFOs are refused; only regular files
and directories are unpacked. Sizes are counted from the bytes actually
read, not from what the archive claims.
"""

import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from django.core.exceptions import ValidationError

from jobs.archive_limits import archive_limits

SOURCE_SUFFIXES = (".py", ".zip", ".tar.gz", ".tgz")
PY_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\.py$")
CHUNK = 1024 * 1024


def source_kind(filename):
    """'py', 'zip' or 'tar', from the uploaded file's name; ValidationError otherwise."""
    name = (filename or "").lower()
    if name.endswith(".py"):
        return "py"
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar.gz", ".tgz")):
        return "tar"
    raise ValidationError(f"{filename!r} is not a source: upload a .py file, a .zip or a .tar.gz folder")


def py_filename(filename):
    """The name a single uploaded script is stored under: its base name, plain characters only."""
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    if not PY_NAME.match(base):
        raise ValidationError(
            f"{filename!r} is not a usable script name: use letters, digits, '_', '-' and '.', ending in .py"
        )
    return base


def clean_member_name(name):
    """The member's relative POSIX path with any leading './' removed; ValidationError if it could escape."""
    if not name or "\x00" in name:
        raise ValidationError("the archive has a member with an empty name or a NUL byte in its name")
    if "\\" in name:
        raise ValidationError(f"archive member {name!r} has a backslash in its name")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise ValidationError(f"archive member {name!r} has an absolute path")
    parts = [p for p in PurePosixPath(name).parts if p not in (".",)]
    if any(p == ".." for p in parts):
        raise ValidationError(f"archive member {name!r} leaves the archive's folder ('..')")
    cleaned = "/".join(parts)
    if not cleaned:
        return ""
    return cleaned


class _Counter:
    """Counts members and bytes against the limits, naming the member that breaks one."""

    def __init__(self):
        self.limits = archive_limits()
        self.members = 0
        self.total = 0
        self.seen = set()

    def member(self, name):
        self.members += 1
        if self.members > self.limits.max_members:
            raise ValidationError(f"the archive has more than {self.limits.max_members} members")
        if name in self.seen:
            raise ValidationError(f"archive member {name!r} appears more than once")
        self.seen.add(name)

    def size(self, name, size):
        if size > self.limits.max_member_bytes:
            raise ValidationError(
                f"archive member {name!r} is larger than the limit of {_mb(self.limits.max_member_bytes)} unpacked"
            )
        self.total += size
        if self.total > self.limits.max_total_bytes:
            raise ValidationError(
                f"the archive unpacks to more than the limit of {_mb(self.limits.max_total_bytes)} "
                f"(reached at member {name!r})"
            )


def _mb(n):
    return f"{n / (1024 * 1024):g} MB"


def _open(source):
    """(binary file object, should_close) for a path or an open file object."""
    if isinstance(source, (str, os.PathLike)):
        return open(source, "rb"), True
    if hasattr(source, "seek"):
        source.seek(0)
    return source, False


def _zip_members(fileobj):
    """Yield (clean name, kind, declared size, ZipInfo) for every zip member, refusing links and specials."""
    try:
        archive = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ValidationError(f"the .zip could not be read: {exc}")
    with archive:
        for info in archive.infolist():
            name = clean_member_name(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ValidationError(f"archive member {info.filename!r} is a symbolic link; links are not allowed")
            if mode and stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise ValidationError(f"archive member {info.filename!r} is a device file or FIFO; only files and folders are allowed")
            if info.flag_bits & 0x1:
                raise ValidationError(f"archive member {info.filename!r} is encrypted")
            kind = "dir" if info.is_dir() else "file"
            yield name, kind, info.file_size, (archive, info)


def _tar_members(fileobj):
    try:
        archive = tarfile.open(fileobj=fileobj, mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ValidationError(f"the .tar.gz could not be read: {exc}")
    with archive:
        try:
            while True:
                info = archive.next()
                if info is None:
                    break
                name = clean_member_name(info.name)
                if info.issym() or info.islnk():
                    raise ValidationError(
                        f"archive member {info.name!r} is a link (to {info.linkname!r}); links are not allowed"
                    )
                if info.isdev() or info.isfifo():
                    raise ValidationError(f"archive member {info.name!r} is a device file or FIFO; only files and folders are allowed")
                if not (info.isfile() or info.isdir()):
                    raise ValidationError(f"archive member {info.name!r} is not a regular file or folder")
                yield name, ("dir" if info.isdir() else "file"), info.size, (archive, info)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise ValidationError(f"the .tar.gz could not be read: {exc}")


def _members(fileobj, kind):
    return _zip_members(fileobj) if kind == "zip" else _tar_members(fileobj)


def validate_source(source, filename):
    """Check an uploaded source; returns the sorted list of files it holds (POSIX relative paths).

    `source` is a path or a binary file object (rewound first). Raises
    ValidationError naming the first bad member: absolute paths, '..',
    backslashes, links, device files, duplicates, more members or bytes than
    the limits in jobs.archive_limits, or an unreadable archive.
    """
    kind = source_kind(filename)
    limits = archive_limits()
    fileobj, close = _open(source)
    try:
        if kind == "py":
            name = py_filename(filename)
            size = 0
            while chunk := fileobj.read(CHUNK):
                size += len(chunk)
                if size > limits.max_member_bytes:
                    raise ValidationError(f"{name} is larger than the limit of {_mb(limits.max_member_bytes)}")
            return [name]
        counter = _Counter()
        files = []
        for name, member_kind, size, _ in _members(fileobj, kind):
            if not name:
                continue
            counter.member(name)
            if member_kind == "file":
                counter.size(name, size)
                files.append(name)
        if not files:
            raise ValidationError("the archive holds no files")
        return sorted(files)
    finally:
        if close:
            fileobj.close()
        elif hasattr(fileobj, "seek"):
            fileobj.seek(0)


def _target(dest, name):
    path = (dest / name).resolve()
    if path == dest or not path.is_relative_to(dest):
        raise ValidationError(f"archive member {name!r} would be written outside the work folder")
    return path


def _copy(stream, path, name, counter):
    written = 0
    with open(path, "xb") as out:
        while chunk := stream.read(CHUNK):
            written += len(chunk)
            # Counted from the bytes read: an archive that under-declares sizes still stops here.
            if written > counter.limits.max_member_bytes:
                raise ValidationError(
                    f"archive member {name!r} is larger than the limit of {_mb(counter.limits.max_member_bytes)} unpacked"
                )
            out.write(chunk)
    counter.size(name, written)


def extract_source(source, filename, dest_dir):
    """Unpack a source into `dest_dir` (created if missing), checking every member again.

    Returns the sorted list of files written. Never follows or creates links;
    a member whose resolved path leaves `dest_dir` stops the extraction with
    ValidationError.
    """
    kind = source_kind(filename)
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    dest = dest.resolve()
    fileobj, close = _open(source)
    counter = _Counter()
    written = []
    try:
        if kind == "py":
            name = py_filename(filename)
            counter.member(name)
            _copy(fileobj, _target(dest, name), name, counter)
            return [name]
        for name, member_kind, _size, (archive, info) in _members(fileobj, kind):
            if not name:
                continue
            counter.member(name)
            path = _target(dest, name)
            if member_kind == "dir":
                path.mkdir(parents=True, exist_ok=True)
                continue
            parent = path.parent
            parent.mkdir(parents=True, exist_ok=True)
            if not parent.resolve().is_relative_to(dest):
                raise ValidationError(f"archive member {name!r} would be written outside the work folder")
            if kind == "zip":
                stream = archive.open(info)
            else:
                stream = archive.extractfile(info)
                if stream is None:
                    raise ValidationError(f"archive member {name!r} could not be read")
            with stream:
                _copy(stream, path, name, counter)
            executable = (info.external_attr >> 16 if kind == "zip" else info.mode) & 0o111
            path.chmod(0o755 if executable else 0o644)
            written.append(name)
        return sorted(written)
    except FileExistsError as exc:
        raise ValidationError(f"archive member {Path(exc.filename).name!r} appears more than once")
    finally:
        if close:
            fileobj.close()


def copy_tree(src_dir, dest_dir):
    """Copy a built-in example folder into a work dir (no links followed, caches skipped)."""
    shutil.copytree(
        src_dir, dest_dir, symlinks=False, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )


def read_member(source, filename, member):
    """The bytes of one member (e.g. to show an entry script); None if it is not there."""
    kind = source_kind(filename)
    fileobj, close = _open(source)
    try:
        if kind == "py":
            return fileobj.read() if py_filename(filename) == member else None
        for name, member_kind, _size, (archive, info) in _members(fileobj, kind):
            if name == member and member_kind == "file":
                stream = archive.open(info) if kind == "zip" else archive.extractfile(info)
                with stream:
                    return stream.read(archive_limits().max_member_bytes)
        return None
    finally:
        if close:
            fileobj.close()
