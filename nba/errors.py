"""Errors for expected conditions: the CLI prints their message on one line and exits 1, no traceback.

An expected condition is one a user meets by running steps out of order or pointing at the wrong
place (no model trained yet, nothing evaluated, no champion, no dataset): the message says what is
missing and which command makes it. Bugs stay ordinary exceptions with their traceback.
"""

from __future__ import annotations


class ExpectedError(Exception):
    """An expected condition that stops a command; the message is the one line the user reads."""


class NotReadyError(ExpectedError, ValueError):
    """A step this command needs has not run yet (no challenger, no champion, no dataset)."""
