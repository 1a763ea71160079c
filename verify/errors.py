"""Errors the CLI turns into one line on stderr and an exit code (never a traceback)."""

from __future__ import annotations

import os

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2


class InputError(Exception):
    """Bad input: the file (or argument) and what is wrong with it. Exit code 2."""

    def __init__(self, source: str | os.PathLike | None, problem: str):
        self.source = None if source is None else os.fspath(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}" if self.source else problem)


class TaskFailed(Exception):
    """A task run by a worker (a local process or a Ray task) raised or its worker died: the work
    it belonged to cannot finish. Exit code 1, one line; nothing partial is written (outputs are
    atomic)."""


class CheckFailed(Exception):
    """A verification ran and found a mismatch. Exit code 1."""
