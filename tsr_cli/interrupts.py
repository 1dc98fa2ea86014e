"""What Ctrl-C does to long work: `tsr train`, `tsr sft` and `tsr compare` share these.

A run in this process stops cleanly: the first Ctrl-C lets the current step
finish and saves a checkpoint, the second stops at once. Cells running as Ray
tasks cannot be asked to stop, so Ctrl-C cancels them instead. Either way the
command ends with `Interrupted`, which `tsr_cli.cli.main` prints as one line
with the command that resumes it, and exit code 130.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

from rich.console import Console

from tsr_cli.errors import Interrupted

err = Console(stderr=True)


@contextmanager
def stop_on_ctrl_c():
    """The first Ctrl-C lets the current step finish and saves a checkpoint; the second stops at once."""
    from tsr_cli.train.run import clear_stop, request_stop

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return

    def first(signum, frame):
        request_stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        err.print("tsr: Ctrl-C: finishing this step and saving a checkpoint; Ctrl-C again stops at once",
                  highlight=False)

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        clear_stop()


@contextmanager
def cancel_on_ctrl_c():
    """Cells in Ray tasks do not see this process's Ctrl-C, so waiting for their current step
    could take as long as the cells: the first Ctrl-C cancels them (the executor's cleanup),
    and each resumes later from its last checkpoint."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted("Ctrl-C: the running cells were cancelled; each keeps its last checkpoint") from None
