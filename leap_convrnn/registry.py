"""A name -> builder registry, one instance per kind (model, task, meta-learner, ...)."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

from leap_convrnn.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to entries (builders or classes) of one kind.

    `get` raises a `UserError` that lists the accepted names (and close matches)
    when a name is unknown, so every package reports bad names the same way.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers an entry under `name`."""

        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        """Return the entry registered under `name`, or raise a one-line UserError."""
        if name not in self._entries:
            hint = did_you_mean(name, self._entries)
            raise UserError(
                f"unknown {self.kind} {name!r}{hint}; accepted: {', '.join(self.names())}"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def did_you_mean(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """` (did you mean a, b?)` naming the candidates closest to `name`, or "" if none is."""
    close = difflib.get_close_matches(name, list(candidates), n=n)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def check_options(
    fn: Callable[..., Any], options: Mapping[str, Any], what: str, reserved: Sequence[str] = ()
) -> None:
    """Raise a UserError if `options` holds a keyword that `fn` does not accept, or one of
    `reserved` (arguments the caller passes itself, which options cannot set)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [
        n
        for n, p in params.items()
        if p.kind is not inspect.Parameter.VAR_POSITIONAL and n != "self" and n not in reserved
    ]
    for key in options:
        if key not in accepted:
            listed = ", ".join(accepted) or "none"
            raise UserError(f"unknown option {key!r} for {what}; accepted: {listed}")
