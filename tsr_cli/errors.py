"""User-facing errors: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

from contextlib import contextmanager


class UserError(Exception):
    """A mistake in what the user asked for (bad flag, unknown name, missing file)."""

    @staticmethod
    @contextmanager
    def wrap(*kinds: type[BaseException]):
        """Re-raise the given exception kinds as a one-line UserError."""
        try:
            yield
        except kinds as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(message.strip("'\"")) from None
