"""Exceptions with messages meant for users.

Every error a user can cause (an unknown name, a bad option value, a missing file) is an
:class:`XaibenchError`. The CLI prints its message on one line and exits with status 2, without a
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class XaibenchError(Exception):
    """An error caused by the user's input, reported as one line.

    Attributes:
        exit_code: The command's exit status: 2, a usage error (the default).
    """

    exit_code: int = 2


class WriteFailedError(XaibenchError):
    """A file could not be written (a full disk, a quota).

    The system's problem, not a usage error, so the command exits 1; the message names the
    file, and nothing is left half written.
    """

    exit_code = 1


class UnknownComponentError(XaibenchError, KeyError):
    """A component name that no plugin registered.

    Attributes:
        plugin_hint: When a plugin package that comes with xaibench's source provides the name
            (:mod:`xaibench.known_plugins`), which one and how to install it; else ``None``.
        plugin_name: Without registered suggestions, a name such a package provides that is
            close to ``name`` (``plugin_hint`` then says which package); else ``None``.
    """

    def __init__(self, kind: str, name: str, suggestions: list[str], available: list[str]) -> None:
        from xaibench.bridges.extras import missing_extra_hint
        from xaibench.known_plugins import close_plugin_name, plugin_hint

        self.kind = kind
        self.name = name
        self.suggestions = suggestions
        self.available = available
        key = self._key()
        self.plugin_hint = missing_extra_hint(key, name) or plugin_hint(key, name)
        self.plugin_name = None
        if self.plugin_hint is None and not suggestions:
            self.plugin_name = close_plugin_name(key, name)
            if self.plugin_name is not None:
                self.plugin_hint = plugin_hint(key, self.plugin_name)
        super().__init__(self.__str__())

    def _key(self) -> str:
        """The kind's key (``tasks``), which listings and the plugin table use, not its noun."""
        from xaibench.kinds import KINDS

        return next((k.key for k in KINDS if k.noun == self.kind), self.kind)

    def __str__(self) -> str:
        message = f"unknown {self.kind} {self.name!r}"
        if self.plugin_name:
            message += f"; did you mean {self.plugin_name!r}? {self.plugin_hint}"
        elif self.plugin_hint:
            message += f"; {self.plugin_hint}"
        if self.suggestions:
            message += f"; did you mean {', '.join(repr(s) for s in self.suggestions)}?"
        shown = self.available[:12]
        more = "" if len(self.available) <= 12 else f", ... ({len(self.available)} in all)"
        if shown:
            message += f" (available: {', '.join(shown)}{more}; see `xaibench ls {self._key()}`)"
        else:
            message += f" (no {self.kind} is registered; see `xaibench plugins`)"
        return message


class RegistryCollisionError(XaibenchError):
    """Two plugins registered the same name for the same kind of component."""


class InvalidOptionsError(XaibenchError):
    """Options given to a component (or the run) failed validation.

    Attributes:
        problems: Each problem on its own (``key: message``), when there were several.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])


class MultipleErrors(XaibenchError):  # noqa: N818 (a list of errors, not one)
    """Several user errors found at once (e.g. every missing weight of a grid), one per line."""

    def __init__(self, summary: str, items: list[str]) -> None:
        self.summary = summary
        self.items = items
        super().__init__(f"{summary}: " + " | ".join(items))


class InputRangeError(XaibenchError, ValueError):
    """Images reached a model outside the raw intensity range its adapter expects."""
