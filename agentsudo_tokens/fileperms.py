"""Refuse files and directories that others could rewrite: trust starts with who can write.

    check_not_writable_by_others(Path("keys"), what="key directory")
    with open_trusted(Path("keys/jwks.json"), what="JWKS file") as handle:
        data = handle.read()

Both the signing side (the key directory) and the verifying side (a JWKS file
and the directory holding it) go through these checks: a group- or
world-writable key directory or JWKS lets another user swap in a key of their
own. A file or directory on a read-only mount (a Kubernetes ConfigMap, a
read-only container image) is not writable whatever its mode says.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from .errors import ConfigError

__all__ = ["check_not_writable_by_others", "open_trusted"]

_OTHERS_WRITE = 0o022


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _refuse(path: Path, mode: int, what: str, advice: str) -> None:
    if mode & _OTHERS_WRITE and not _read_only_mount(path):
        raise ConfigError(
            f"{what} {path} is writable by others (mode {mode:04o}); {advice}",
            expected="not group/world-writable",
            found=f"{mode:04o}",
        )


def check_not_writable_by_others(path: Path, *, what: str) -> None:
    """Refuse ``path`` (a file or a directory) when its group or others may write to it.

    :raises ConfigError: it cannot be examined, or group/others may write it.
    """
    try:
        st_mode = os.stat(path).st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    expected = "0700 or 0755" if stat.S_ISDIR(st_mode) else "0600 or 0644"
    advice = f"expected {expected}: run chmod go-w on it"
    if stat.S_ISDIR(st_mode) and st_mode & stat.S_ISVTX:  # /tmp and its kind are shared by design
        advice = "a shared directory such as /tmp: keep the file in a directory of its own"
    _refuse(path, stat.S_IMODE(st_mode), what, advice)


def open_trusted(path: Path, *, what: str) -> BinaryIO:
    """Open ``path`` for reading after checking that only its owner can change it.

    Checked: the file itself (on the open descriptor, so a swap after the check
    does not count), the directory named in ``path``, and, for a symbolic link,
    the directory of the file it points to.

    :raises OSError: it cannot be opened (the caller says what was being read).
    :raises ConfigError: group or others may write it or a directory holding it.
    """
    handle = path.open("rb")
    try:
        _refuse(
            path,
            stat.S_IMODE(os.fstat(handle.fileno()).st_mode),
            what,
            "expected 0600 or 0644: run chmod go-w on it",
        )
        directories = {path.absolute().parent}
        directories.add(Path(os.path.realpath(path)).parent)
        for directory in sorted(directories):
            check_not_writable_by_others(directory, what=f"the directory holding the {what}")
    except BaseException:
        handle.close()
        raise
    return handle
