"""Which observers a run gets: names, per-observer options and a tracking URI, checked.

Shared by ``xaibench run`` (``--observer``, ``--observer-option``, ``--tracking-uri``) and
:func:`xaibench.run` (``observers=``), so both refuse the same mistakes with the same line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from xaibench.errors import XaibenchError

if TYPE_CHECKING:
    from xaibench.observers.base import Observer
    from xaibench.plugins import Components

#: The option an observer declares to take ``--tracking-uri``.
TRACKING_URI = "tracking_uri"


def parse_observer_options(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``NAME.KEY=VALUE`` items (``--observer-option``) as ``{name: {key: value}}``.

    Each value is read as YAML (``mlflow.nested=false`` is a boolean).

    Raises:
        XaibenchError: An item is not ``NAME.KEY=VALUE``.
    """
    import yaml

    parsed: dict[str, dict[str, Any]] = {}
    for item in items:
        target, sep, value = item.partition("=")
        name, dot, key = target.strip().partition(".")
        if not sep or not dot or not name or not key:
            raise XaibenchError(f"--observer-option {item!r}: write NAME.KEY=VALUE")
        parsed.setdefault(name, {})[key] = yaml.safe_load(value) if value.strip() else ""
    return parsed


def create_observers(
    components: Components,
    names: Sequence[str],
    options: Mapping[str, Mapping[str, Any]] | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Observer]:
    """The observers ``names`` with their options, by name.

    Args:
        components: The run's components.
        names: Observer names (``--observer``), each at most once.
        options: Options per observer name (``--observer-option``).
        tracking_uri: Given to every named observer that has a ``tracking_uri`` option.

    Raises:
        XaibenchError: An unknown name (did-you-mean), a name given twice, options for an
            observer that is not named, an invalid option, or a tracking URI no named observer
            takes.
    """
    options = dict(options or {})
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise XaibenchError(f"--observer {name!r} is given twice")
        seen.add(name)
        components.observers.get(name)  # unknown: one line with did-you-mean
    for name in options:
        if name not in seen:
            raise XaibenchError(
                f"--observer-option {name}.…: {name!r} is not among the run's observers "
                f"({', '.join(names) or 'none'}); add --observer {name}"
            )
    takers = [n for n in names if TRACKING_URI in components.observers.get(n).load().model_fields]
    if tracking_uri is not None and not takers:
        raise XaibenchError(
            "--tracking-uri: no observer of this run takes a tracking URI; add one that does "
            "(e.g. --observer mlflow from the xaibench-mlflow package)"
        )
    out: dict[str, Observer] = {}
    for name in names:
        given = dict(options.get(name, {}))
        if tracking_uri is not None and name in takers:
            given.setdefault(TRACKING_URI, tracking_uri)
        out[name] = components.observers.create(name, given)
    return out


def observers_argument(
    components: Components, observers: Any, tracking_uri: str | None = None
) -> dict[str, Observer]:
    """:func:`xaibench.run`'s ``observers=``: names, instances, or ``{name: options}``.

    ``"mlflow"``, ``["mlflow", "jsonl"]``, ``{"mlflow": {"experiment": "osteo"}}``, or an
    :class:`~xaibench.observers.base.Observer` instance (a notebook's own class, registered or
    not; named by its class), alone or in a list.

    Raises:
        XaibenchError: As :func:`create_observers`, or a value of another type.
    """
    from xaibench.observers.base import Observer

    if observers is None:
        return create_observers(components, (), None, tracking_uri)
    if isinstance(observers, str | Observer):
        observers = [observers]
    if isinstance(observers, Mapping):
        options = {str(k): dict(v or {}) for k, v in observers.items()}
        return create_observers(components, list(options), options, tracking_uri)
    if not isinstance(observers, Sequence):
        raise XaibenchError(
            f"observers: expected names, Observer instances or {{name: options}}, not "
            f"{type(observers).__name__}"
        )
    names = [o for o in observers if isinstance(o, str)]
    instances = [o for o in observers if isinstance(o, Observer)]
    if len(names) + len(instances) != len(observers):
        raise XaibenchError("observers: expected names (str) or Observer instances")
    out = create_observers(components, names, None, tracking_uri if names else None)
    for instance in instances:
        out[type(instance).__name__] = instance
    return out
