"""What the CLI tells the user when something goes wrong: always one line, never a traceback.

- `UserError`: a mistake in what the user asked for; exit code 2.
- `RunFault`: the machine, not the input, stopped a run (a full disk); exit code 1.
  The run stays resumable, and the message says what filled up and how to resume.
- `Interrupted`: Ctrl-C; exit code 130, with a line that says how to resume.
- `warn(...)`: a one-line `tsr: warning:` on stderr for something recovered from.
"""

from __future__ import annotations

import errno
import sys
from contextlib import contextmanager
from pathlib import Path

#: errno values that mean "the disk (or the user's quota) is full"
_FULL = (errno.ENOSPC, errno.EDQUOT)


class UserError(Exception):
    """A mistake in what the user asked for (bad flag, unknown name, missing file)."""

    @staticmethod
    @contextmanager
    def wrap(*kinds: type[BaseException]):
        """Re-raise the given exception kinds as a one-line UserError."""
        try:
            yield
        except kinds as exc:
            # a KeyError's str() is the repr of its message: quoted
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else first_line(exc)
            raise UserError(str(message)) from None


class StoppedRun(Exception):
    """A run that stopped before its end but can continue from its last checkpoint.

    `what` says what happened; `resume` is the command that continues the
    run (the run sets it; `tsr compare` replaces it with its own).
    """

    advice = "resume with"

    def __init__(self, what: str, run_dir: Path | None = None):
        super().__init__(what)
        self.what = what
        self.resume = f"tsr train --resume {run_dir}" if run_dir is not None else None

    def __str__(self) -> str:
        return f"{self.what}; {self.advice}: {self.resume}" if self.resume else self.what


class RunFault(StoppedRun):
    """The machine, not the input, stopped the run (a full disk); exit code 1."""

    advice = "free space, then resume with"


class Interrupted(StoppedRun):
    """Ctrl-C stopped the run; exit code 130."""


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC/EDQUOT, also as safetensors reports them (its Rust I/O error text)."""
    if isinstance(exc, OSError) and exc.errno in _FULL:
        return True
    text = str(exc)
    return any(f"os error {code})" in text for code in _FULL)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def warn(message: str) -> None:
    """One `tsr: warning:` line on stderr."""
    print(f"tsr: warning: {message}", file=sys.stderr, flush=True)
