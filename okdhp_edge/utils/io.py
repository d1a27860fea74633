"""Atomic file writes and hashing."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from okdhp_edge.errors import IntegrityError, WriteError

log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()  # the process's umask: files are written as open() would create them




_WRITE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                 errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                 errno.EPERM: "permission denied",
                 errno.ENOTDIR: "a part of the path is a file, not a folder"}


def _write_error(path: Path, exc: BaseException) -> Optional[WriteError]:
    """The WriteError ``exc`` amounts to, or None. Writers that are not Python's own report
    a full disk otherwise (torch's zip writer: a RuntimeError; ONNX Runtime's quantizer: a
    protobuf DecodeError reading back the file it could not finish): the free space tells."""
    reason = _WRITE_ERRNOS.get(getattr(exc, "errno", None) or -1)
    if reason is None and isinstance(exc, Exception):
        try:
            if shutil.disk_usage(path.parent).free < (1 << 20):
                reason = "the disk is full"
        except OSError:
            pass
    if reason is None:
        return None
    return WriteError(f"cannot write {path}: {reason} ({exc.__class__.__name__}: "
                      f"{str(exc).splitlines()[0] if str(exc) else ''})")


def _temp_beside(path: Path) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp",
                                   dir=path.parent)
    except OSError as exc:
        raise (_write_error(path, exc) or exc) from None
    os.close(fd)
    return Path(tmp)


def _finish(tmp: Path) -> None:
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o666 & ~UMASK)  # as open() would create it, not mkstemp's 0600


def atomic_write(path: Path, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` then rename the temp file onto ``path``.

    A crash leaves either the old file or the new one, never a torn file; a full disk or a
    read-only folder raises :class:`WriteError` naming the file.
    """
    atomic_write_set({Path(path): writer})


def atomic_write_set(writers: dict[Path, Callable[[Path], None]]) -> None:
    """Write several files as a set: every one to a temporary file first, then all renamed
    into place in a row, so that a failure while writing leaves the old set whole."""
    tmps: dict[Path, Path] = {}
    try:
        for path, writer in writers.items():
            tmps[path] = _temp_beside(Path(path))
            try:
                writer(tmps[path])
                _finish(tmps[path])
            except Exception as exc:  # noqa: BLE001 - a full disk shows as many types
                err = _write_error(Path(path), exc)
                if err is None:
                    raise
                raise err from None
        for path, tmp in tmps.items():
            os.replace(tmp, path)
    except BaseException:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
        raise


def numbered_names(name: str, limit: int = 100_000) -> Iterator[str]:
    """``name``, ``name-2``, ``name-3``... (``limit`` in all): the candidates a free or held
    folder name is chosen from, in the order every caller tries them."""
    yield name
    for i in range(2, limit + 1):
        yield f"{name}-{i}"


def check_writable(folder: Path) -> None:
    """Raise :class:`WriteError` now, not after an hour of work, if ``folder`` cannot take a
    file (created if missing)."""
    try:
        tmp = _temp_beside(Path(folder) / "write-check")
    except OSError as exc:  # not a folder, a file in the way, no such device ...
        if isinstance(exc, WriteError):
            raise
        raise WriteError(f"{folder}: cannot write there ({exc.strerror or exc})") from None
    tmp.unlink(missing_ok=True)


def temp_prefix(name: str, partial: bool = False) -> str:
    """The name prefix of a temporary for ``name`` (a ``.tmp`` file, or with ``partial`` a
    folder being built): hidden, and carrying the writer's pid so that a later run can tell
    a killed writer's leftovers from a live writer's work."""
    return f".{name}.{'partial-' if partial else ''}{os.getpid()}~"


_OWNER = re.compile(r"\.(?:partial-)?(\d+)~")


def _owner_alive(name: str) -> bool:
    """Whether the process that made temporary ``name`` still runs (False when the name
    carries no pid: an older okdhp_edge's, long gone)."""
    m = _OWNER.search(name)
    if m is None:
        return False
    try:
        os.kill(int(m.group(1)), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(folder: Path, names: Optional[list[str]] = None) -> list[Path]:
    """Delete the temporaries killed writers left in ``folder`` for ``names`` (None: for any
    name): ``.NAME.*.tmp`` files and ``.NAME.partial-*`` folders whose writing process is
    gone; a live writer's are left alone. Returns what was removed."""
    folder, removed = Path(folder), []
    for name in names or ["*"]:
        for stale in [*folder.glob(f".{name}.*.tmp"), *folder.glob(f".{name}.partial-*")]:
            if _owner_alive(stale.name):
                continue
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
            removed.append(stale)
    if removed:
        log.info("removed %d temporaries a killed run left in %s", len(removed), folder)
    return removed


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()




def verify_sha256(path: Path, expected: str) -> None:
    """Raise :class:`IntegrityError` unless ``path`` hashes to ``expected``."""
    path = Path(path)
    if not path.is_file():
        raise IntegrityError(f"{path}: file named in the manifest is missing")
    actual = sha256_file(path)
    if actual != expected:
        raise IntegrityError(
            f"{path}: sha256 mismatch (manifest {expected[:16]}..., file {actual[:16]}...); "
            "the file is corrupted, truncated or was replaced"
        )
