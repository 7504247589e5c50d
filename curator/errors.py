"""The one exception every curator error derives from.

Each stage raises its own subclass (WorkspaceError, ModelError, ...) with a
message that is one line saying what is wrong, where, and what to do. The
command line prints that line and exits with `exit_code`; a library caller
can catch `CuratorError` alone.

ConvertError is defined here rather than in its stage: `curator convert`'s
modules (convert, swap, videoio) all raise it, and none imports another
just for it. curator.convert re-exports it.
"""

from __future__ import annotations


class CuratorError(Exception):
    """A problem the user can act on; str(error) is one line naming the file or option and the reason."""

    exit_code = 2  # usage, input or workspace problems; 1 is kept for "ran, but found nothing"


class UsageError(CuratorError):
    """An option value or combination that cannot work (a negative count, two options that exclude each other)."""


class NothingFound(CuratorError):
    """The command ran but its input held nothing to work on (no faces in any footage)."""

    exit_code = 1


class ConvertError(CuratorError):
    """`curator convert` cannot go on: one line naming the file and the reason."""
