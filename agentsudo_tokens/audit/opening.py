"""Opening an audit log only if it can be trusted: ``open_checked``.

    fd = open_checked(path, os.O_RDONLY, writing=False)

The file is opened with ``O_NOFOLLOW`` and must be a regular file that only
its owner may write: a symlink, a file writable by group or others, and (to
write) one owned by another user or with a second name (hard link) are refused
(``ConfigError``); so is a directory anyone may write without the sticky bit
(``check_directory``, before a writer opens the file).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

from ..errors import ConfigError

__all__ = ["check_directory", "check_file", "open_checked"]


def check_file(path: Path, info: os.stat_result, *, writing: bool, check_mode: bool = True) -> None:
    """Refuse what is not a regular file only its owner may write (and, to write, ours)."""
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"the audit log {path} is not a regular file", found=str(path))
    mode = stat.S_IMODE(info.st_mode)
    if check_mode and mode & 0o022:
        raise ConfigError(
            f"the audit log {path} is writable by group or others (mode {mode:04o}): "
            "any of them could rewrite it; run chmod go-w on it",
            expected="not group/world-writable",
            found=f"{mode:04o}",
        )
    if not writing:
        return
    if info.st_uid != os.geteuid():
        raise ConfigError(
            f"the audit log {path} is owned by uid {info.st_uid}, not by this user "
            f"(uid {os.geteuid()}): its owner could rewrite it",
            expected=os.geteuid(),
            found=info.st_uid,
        )
    if info.st_nlink != 1:
        raise ConfigError(
            f"the audit log {path} has {info.st_nlink} names (hard links): give it exactly one",
            expected=1,
            found=info.st_nlink,
        )


def check_directory(path: Path) -> None:
    """Refuse a directory anyone may write without the sticky bit: they could swap the file.

    A group-writable directory is accepted (Debian's ``/var/log`` is ``root:syslog``
    0775, and user-private groups make 0775 the usual mode); ``/tmp`` is sticky.
    """
    directory = path.parent
    try:
        mode = os.stat(directory).st_mode
    except OSError:
        return  # opening the file will say what is wrong
    if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
        raise ConfigError(
            f"the directory {directory} of the audit log is writable by everyone without the "
            f"sticky bit (mode {stat.S_IMODE(mode):04o}): anyone could replace the file; "
            "run chmod o-w (or chmod +t) on it",
            expected="not world-writable, or sticky",
            found=f"{stat.S_IMODE(mode):04o}",
        )


def open_checked(path: Path, flags: int, *, writing: bool, check_mode: bool = True) -> int:
    """Open ``path`` without following a symlink, and check what was opened."""
    verb = "open" if writing else "read"
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK) and path.is_symlink():
            raise ConfigError(
                f"the audit log {path} is a symbolic link: refusing to follow it "
                "(give the real path)",
                expected="a regular file",
                found="symbolic link",
            ) from exc
        raise ConfigError(
            f"cannot {verb} the audit log {path}: {exc.strerror}", found=str(path)
        ) from exc
    try:
        check_file(path, os.fstat(fd), writing=writing, check_mode=check_mode)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd
