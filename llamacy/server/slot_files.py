"""Saving a slot to a file in --slot-save-path: all or nothing, with errors that say what failed.

The file is written under a temporary name and renamed over the target only when complete,
so a failed save leaves neither a partial file nor a temporary one, and never touches the
slot. Failures are told apart: a name taken by a directory (400), no space left (507, checked
against the file's size before writing and again after a failed write), a directory the
server may not write to (500), and any other write error (500), each naming the file.
"""
from __future__ import annotations

import errno
import logging
import os

from llamacy.errors import InsufficientStorageError, InvalidRequestError, LlamacyError, UnavailableError

log = logging.getLogger(__name__)
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _free_bytes(directory: str) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def _no_space(idx: int, filename: str, needed: int, free: int) -> InsufficientStorageError:
    return InsufficientStorageError(f"no space left to save slot {idx} as '{filename}': the file needs {needed} "
                                    f"bytes, {free} are free in the slot save directory")


def _os_error(exc: OSError, idx: int, filename: str) -> LlamacyError:
    if exc.errno in _NO_SPACE:
        return InsufficientStorageError(f"no space left to save slot {idx} as '{filename}'")
    if exc.errno == errno.EISDIR:
        return InvalidRequestError(f"cannot save slot {idx} as '{filename}': a directory of that name exists")
    return LlamacyError(f"cannot save slot {idx} as '{filename}': {exc.strerror or exc} "
                        f"(in the slot save directory)")


async def save_slot_file(scheduler, idx: int, path: str, filename: str) -> tuple[int, int]:
    """Save slot ``idx`` to ``path`` (already resolved inside the save directory)."""
    if os.path.isdir(path):
        raise InvalidRequestError(f"cannot save slot {idx} as '{filename}': a directory of that name exists")
    directory = os.path.dirname(path)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}-{idx}")
    needed = 0

    def before_write(n_bytes: int) -> None:
        nonlocal needed
        needed = n_bytes
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)   # may we write here at all?
        os.close(fd)
        free = _free_bytes(directory)
        if free < n_bytes:
            raise _no_space(idx, filename, n_bytes, free)

    try:
        n_saved, n_written = await scheduler.save_slot(idx, tmp, before_write)
        os.replace(tmp, path)
    except OSError as exc:
        raise _os_error(exc, idx, filename) from None
    except (InvalidRequestError, InsufficientStorageError, UnavailableError):
        raise
    except LlamacyError:   # the engine's writer failed part-way: space, or another I/O error
        free = _free_bytes(directory)
        if needed and free < needed:
            raise _no_space(idx, filename, needed, free) from None
        raise LlamacyError(f"cannot save slot {idx} as '{filename}': writing the file failed") from None
    finally:
        if os.path.lexists(tmp):
            try:
                os.unlink(tmp)
            except OSError as exc:
                log.error("cannot remove the temporary slot file %s: %s", tmp, exc)
    return n_saved, n_written
