"""Checks as data: which contract checks exist per kind, and the :class:`Check` that runs one.

Nothing here imports torch or a component. The table :data:`CHECKS` names each check's function
as a lazy ``"module:function"`` string, so listing (and collecting) thousands of checks costs a
plugin manager and a loop; a check's function is imported when the check runs.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from xaibench.errors import UnknownComponentError, XaibenchError
from xaibench.kinds import KIND_ALIASES, KIND_BY_KEY

if TYPE_CHECKING:
    from xaibench.plugins import Components, PluginManager
    from xaibench.registry import Entry


class ConformanceSkip(Exception):  # noqa: N818 (a skip, not an error)
    """A check that does not apply to a component, or cannot run here (missing weights).

    A plain ``Exception`` rather than pytest's skip outcome, so the kit works (and can be
    imported) without pytest. Under pytest the kit's plugin turns it into a skip wherever it is
    raised, in the kit's own items and in a plugin's parametrised test that calls
    :meth:`Check.run`; with that plugin disabled (``-p no:xaibench``) catch it and call
    ``pytest.skip`` yourself. :func:`check_component` counts it as a skip, not a failure.

    Attributes:
        reason: Why the check was skipped, naming the component.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConformanceFailure(AssertionError):  # noqa: N818 (an assertion, like AssertionError)
    """A component broke its contract; the message names the component and what was wrong."""


@dataclass(frozen=True)
class CheckSpec:
    """One contract check of one kind.

    Attributes:
        kind: Registry key (``"saliency"``) or ``"plugins"`` for load failures.
        check: Short id, unique within the kind (``"no_hooks_left"``).
        target: ``"module:function"`` taking a :class:`Subject`; imported when the check runs.
        summary: What the check asserts, in one line (the docs list these).
    """

    kind: str
    check: str
    target: str
    summary: str

    def load(self) -> Callable[[Subject], None]:
        """Import the check's function."""
        module_name, _, attr = self.target.partition(":")
        function: Callable[[Subject], None] = getattr(importlib.import_module(module_name), attr)
        return function


_C = "xaibench.testing.checks"


def _specs(kind: str, *checks: tuple[str, str]) -> tuple[CheckSpec, ...]:
    """Specs of ``kind`` whose functions live in ``xaibench.testing.checks.<kind>``."""
    return tuple(CheckSpec(kind, name, f"{_C}.{kind}:{name}", summary) for name, summary in checks)


#: Every contract check, per registry key, in the order they run.
CHECKS: dict[str, tuple[CheckSpec, ...]] = {
    "backbones": _specs(
        "backbones",
        ("build", "builds in eval mode; architecture, feature_dim, input spec, random_init sane"),
        ("features", "raw images [B,1,H,W] give finite float features [B, feature_dim]"),
        ("deterministic_build", "two builds after the same torch seed: equal weights, features"),
        ("raw_range", "images outside input_spec.raw_range, or NaN, raise InputRangeError"),
        ("cam_grid", "activation_to_grid(cam_layer output) is [B, C, h, w] within the input"),
        ("attention_maps", "ViTs: one [B, heads, N, N] map per layer, rows sum to 1"),
        ("modules", "last_block_modules hold adapter parameters; lora targets are submodules"),
        ("saliency", "gradcam (and attention_rollout on a ViT) explain a classifier on it"),
        ("strategies", "last_block, lora and full on it: the loss reaches backbone parameters"),
    ),
    "strategies": _specs(
        "strategies",
        ("prepare", "prepare() on a tiny CNN and ViT gives a Classifier with trainable params"),
        ("fit_deterministic", "1-epoch fit twice from one seed: equal weights, equal report"),
        ("fit_frozen_unchanged", "fit changes no parameter prepare() froze; ends in eval mode"),
    ),
    "saliency": _specs(
        "saliency",
        ("output_shape", "maps are detached, finite, floating [B, H, W] in the raw image grid"),
        ("deterministic", "the same torch seed gives equal maps"),
        ("no_hooks_left", "no hooks, grads, requires_grad or mode changes left after explain"),
        ("no_hooks_left_on_error", "the same when the model raises mid-explain"),
        ("capabilities", "runs on declared architectures; supports() refuses undeclared ones"),
    ),
    "perturbations": _specs(
        "perturbations",
        ("output_shape", "same shape, dtype and device as the images; input left untouched"),
        ("outside_mask_unchanged", "pixels outside the mask are returned bit for bit"),
        ("inside_mask_range", "pixels inside the mask are finite and within [0, 1]"),
        ("deterministic", "the same generator seed gives equal output, whatever the global RNGs"),
        ("empty_mask_noop", "an all-False mask changes nothing"),
    ),
    "metrics": _specs(
        "metrics",
        ("declarations", "one metric type; category, needs and higher_is_better consistent"),
        ("output", "finite values of the documented shapes on an ordinary case"),
        ("direction", "a known-better case scores better in the declared direction"),
    ),
    "tasks": _specs(
        "tasks",
        ("classes", "class names non-empty and unique; positive class and regions declared"),
        ("defaults", "defaults() is a valid RunConfig naming only registered components"),
        ("grids", "every grid over defaults() is a valid RunConfig of registered components"),
        ("dataset_regions", "the default dataset provides the task's and config's regions"),
        ("labels", "labels(table) of the default dataset are valid class indices, one per row"),
    ),
    "datasets": _specs(
        "datasets",
        ("table", "table() has unique sample_id and patient_id, one row per sample"),
        ("sample", "samples: float [1,H,W] image in [0,1], bool [H,W] mask per region name"),
        ("fingerprint", "two instances with the same options have the same fingerprint"),
    ),
    "executors": _specs(
        "executors",
        ("results_in_order", "results in cell order; job.done once per cell, in this process"),
        ("no_cells", "no cells: no results and no job.done call"),
    ),
    "importers": _specs(
        "importers",
        ("declarations", "download described; regions and findings are snake_case names"),
        ("empty_root_is_a_layout_error", "an empty ROOT: one-line ImportLayoutError, no writes"),
    ),
    "segmenters": _specs(
        "segmenters",
        ("declarations", "regions: non-empty, distinct snake_case names; weights_hint given"),
        ("load_and_shape", "loads on CPU; raw images give a bool [B,H,W] mask per region only"),
        ("deterministic", "two calls, and a second instance, give equal masks"),
        ("raw_range", "images scaled to 0-255, below 0, or with NaN raise InputRangeError"),
        ("provenance", "JSON-able, stable, a weights SHA-256 (or weights: null), no abs. paths"),
    ),
    "observers": _specs(
        "observers",
        ("declarations", "an Observer overriding an event method, each taking one event"),
        ("events_stay_in_the_run_folder", "a made-up run's events: no error, no writes outside"),
    ),
    "plugins": (CheckSpec("plugins", "loads", f"{__name__}:_plugin_loads", "the plugin imports"),),
}

_SPEC_BY_ID: dict[tuple[str, str], CheckSpec] = {
    (spec.kind, spec.check): spec for specs in CHECKS.values() for spec in specs
}


@dataclass
class Subject:
    """What a check function receives: the component under test and the registries around it.

    Attributes:
        kind: Registry key.
        name: Registry name (for a broken plugin: the plugin's name).
        components: Every registry, for checks that need other components (reference
            backbones, a task's dataset); ``None`` only for a broken plugin.
        entry: The registry entry; ``None`` only for a broken plugin.
        error: Why a broken plugin failed to load.
        shared: Scratch space shared by the checks of one :func:`conformance_checks` call.
    """

    kind: str
    name: str
    components: Components | None = None
    entry: Entry[Any] | None = None
    error: str | None = None
    shared: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How messages name the component: ``saliency method 'gradcam' (xaibench 0.1.0)``."""
        noun = KIND_BY_KEY[self.kind].noun if self.kind in KIND_BY_KEY else "plugin"
        if self.entry is None:
            return f"{noun} {self.name!r}"
        provider = self.entry.provider
        if provider.distribution == "unknown":  # registered on the manager directly (tests)
            return f"{noun} {self.name!r} (plugin {provider.plugin})"
        return f"{noun} {self.name!r} ({provider.distribution} {provider.version})"

    def fail(self, message: str) -> NoReturn:
        """Raise a :class:`ConformanceFailure` naming the component."""
        raise ConformanceFailure(f"{self.label}: {message}")

    def skip(self, reason: str) -> NoReturn:
        """Raise a :class:`ConformanceSkip` naming the component."""
        raise ConformanceSkip(f"{self.label}: {reason}")

    def registries(self) -> Components:
        """The registries (always present for a registered component)."""
        if self.components is None:
            raise XaibenchError(f"{self.label} has no registries")
        return self.components

    def component_class(self) -> type:
        """Load the component's class (a lazy target is imported here)."""
        if self.entry is None:
            raise XaibenchError(f"{self.label} has no registry entry")
        return self.entry.load()

    def required_options(self, options: dict[str, Any] | None = None) -> list[str]:
        """Options the component requires that neither its registration nor ``options`` give."""
        if self.entry is None:
            return []
        cls = self.component_class()
        given = {**self.entry.options, **(options or {})}
        fields = getattr(cls, "model_fields", {})
        return [n for n, f in fields.items() if f.is_required() and n not in given]

    def create(self, options: dict[str, Any] | None = None) -> Any:
        """Build the component with its registered options updated by ``options``.

        The class's :attr:`~xaibench.component.Component.smoke_options` go under ``options``, so
        a metric sized for real use runs in seconds on the kit's tiny models.

        The registry checks that the class derives from the kind's base class. A component that
        needs options nobody gave (a generic backbone family, a dataset read from files) cannot
        be built without knowing the user's setup, so its checks skip, naming the options.
        """
        smoke = getattr(self.component_class(), "smoke_options", {}) if self.entry else {}
        options = {**smoke, **(options or {})}
        missing = self.required_options(options)
        if missing:
            self.skip(
                f"needs option(s) {', '.join(missing)} that its registration does not preset; "
                "the kit builds components with their registered options only"
            )
        return self.registries()[self.kind].create(self.name, options)


@dataclass(frozen=True)
class Check:
    """One contract check of one registered component.

    Attributes:
        kind: Registry key (``"saliency"``), as in :mod:`xaibench.kinds`.
        component: Registry name.
        check: Check id within the kind (``"no_hooks_left"``).
    """

    kind: str
    component: str
    check: str
    _subject: Subject = field(compare=False, repr=False, hash=False)

    @property
    def id(self) -> str:
        """``kind:component:check``, e.g. ``saliency:gradcam:no_hooks_left`` (a pytest id)."""
        return f"{self.kind}:{self.component}:{self.check}"

    @property
    def summary(self) -> str:
        """What the check asserts."""
        return _SPEC_BY_ID[(self.kind, self.check)].summary

    def run(self) -> None:
        """Run the check.

        Raises:
            AssertionError: The component broke its contract; the message names it and says
                what was wrong. An unexpected exception from the component is wrapped in one
                (and chained, so its traceback survives).
            ConformanceSkip: The check does not apply or cannot run here; the reason says why.
        """
        from xaibench.testing.checks._support import isolated

        function = _SPEC_BY_ID[(self.kind, self.check)].load()
        try:
            with isolated():
                function(self._subject)
        except (ConformanceFailure, ConformanceSkip):
            raise
        except Exception as exc:
            raise ConformanceFailure(
                f"{self._subject.label}: check {self.check!r} failed: {type(exc).__name__}: {exc}"
            ) from exc


def _plugin_loads(subject: Subject) -> None:
    subject.fail(f"failed to load, so none of its components were checked: {subject.error}")


def _kind_keys(kinds: Iterable[str] | None) -> list[str]:
    if kinds is None:
        return list(KIND_BY_KEY)
    keys = []
    for kind in [kinds] if isinstance(kinds, str) else kinds:
        key = KIND_ALIASES.get(kind, kind)
        if key not in KIND_BY_KEY:
            close = difflib.get_close_matches(kind, [*KIND_BY_KEY, *KIND_ALIASES], n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise XaibenchError(
                f"unknown component kind {kind!r}{hint} (kinds: {', '.join(KIND_BY_KEY)})"
            )
        if key not in keys:
            keys.append(key)
    return keys


def _is_pattern(name: str) -> bool:
    return any(c in name for c in "*?[")


class UnknownConformanceTargetError(UnknownComponentError):
    """A name given to :func:`conformance_checks` that no selected registry holds."""

    def __init__(
        self, name: str, suggestions: list[str], available: list[str], keys: list[str]
    ) -> None:
        self.keys = keys
        super().__init__("component", name, suggestions, available)

    def __str__(self) -> str:
        where = f"{'/'.join(self.keys)}" if len(self.keys) < len(KIND_BY_KEY) else "any kind"
        message = f"no component named {self.name!r} in {where}"
        if self.suggestions:
            message += f"; did you mean {', '.join(repr(s) for s in self.suggestions)}?"
        return message + " (see `xaibench ls`; use a wildcard such as 'my_*' to match loosely)"


def conformance_checks(
    names: Iterable[str] | None = None,
    *,
    kinds: Iterable[str] | None = None,
    load_plugins: str | None = None,
    plugin_manager: PluginManager | None = None,
) -> list[Check]:
    """Return one :class:`Check` per contract check of every selected registered component.

    A fresh plugin manager is built (built-ins, then installed plugins), so the checks see what
    ``xaibench run`` would see. Nothing heavy is imported; each check imports what it needs
    when it runs.

    Args:
        names: Shell-style patterns (``"gradcam"``, ``"example_*"``); a component is selected
            when its name matches any. ``None`` selects every component.
        kinds: Registry keys (``"saliency"``, ``"metrics"``; the CLI's aliases work too).
            ``None`` selects every kind.
        load_plugins: Which third-party plugins to load, as ``XAIBENCH_LOAD_PLUGINS`` (which
            it defaults to): comma-separated entry-point or distribution names, ``""`` for none.
        plugin_manager: Use this manager instead of building one (tests that register a
            temporary plugin; ``load_plugins`` is then ignored).

    Returns:
        The checks, by kind (in :data:`xaibench.kinds.KINDS` order), then component name. With
        neither ``names`` nor ``kinds`` given, a plugin that failed to import adds one failing
        ``plugins:<name>:loads`` check, so a broken install cannot pass by checking nothing.

    Raises:
        UnknownComponentError: A name without wildcards matches no selected component; the
            message suggests close names.
        XaibenchError: An unknown kind, or the plugins cannot be collected (a name registered
            twice, a registration hook that raises).
    """
    from xaibench.plugins import collect_components, get_plugin_manager

    pm = plugin_manager or get_plugin_manager(load_plugins=load_plugins)
    components = collect_components(pm)
    keys = _kind_keys(kinds)
    patterns = None if names is None else ([names] if isinstance(names, str) else list(names))
    shared: dict[str, Any] = {}
    matched: set[str] = set()
    checks: list[Check] = []
    for key in keys:
        for entry in components[key].entries():
            if patterns is not None:
                hits = [p for p in patterns if fnmatch.fnmatchcase(entry.name, p)]
                if not hits:
                    continue
                matched.update(hits)
            subject = Subject(key, entry.name, components, entry, shared=shared)
            checks.extend(Check(key, entry.name, spec.check, subject) for spec in CHECKS[key])
    for pattern in patterns or []:
        if pattern not in matched and not _is_pattern(pattern):
            available = sorted({n for key in keys for n in components[key].names()})
            close = difflib.get_close_matches(pattern, available, n=3, cutoff=0.5)
            raise UnknownConformanceTargetError(pattern, close, available, keys)
    if names is None and kinds is None:
        for broken in pm.broken:
            subject = Subject("plugins", broken.name, error=broken.error)
            checks.append(Check("plugins", broken.name, "loads", subject))
    return checks


def check_component(
    name: str,
    kind: str | None = None,
    *,
    load_plugins: str | None = None,
    plugin_manager: PluginManager | None = None,
) -> None:
    """Run every check of one component and raise one error listing every failure.

    Args:
        name: Registry name (exact; no wildcards).
        kind: Registry key, needed only when two kinds register the same name.
        load_plugins: As for :func:`conformance_checks`.
        plugin_manager: As for :func:`conformance_checks`.

    Raises:
        AssertionError: At least one check failed; one line per failure. Skipped checks are
            not failures.
        UnknownComponentError: No component has that name.
    """
    if _is_pattern(name):
        raise XaibenchError(f"check_component takes one exact name, got the pattern {name!r}")
    checks = conformance_checks(
        [name],
        kinds=None if kind is None else [kind],
        load_plugins=load_plugins,
        plugin_manager=plugin_manager,
    )
    found = {c.kind for c in checks}
    if len(found) > 1:
        raise XaibenchError(
            f"{name!r} names components of several kinds ({', '.join(sorted(found))}); "
            "pass kind= to choose one"
        )
    failures = []
    for check in checks:
        try:
            check.run()
        except ConformanceSkip:
            continue
        except AssertionError as exc:
            failures.append(f"{check.id}: {exc}")
    if failures:
        raise ConformanceFailure(
            f"{len(failures)} of {len(checks)} conformance check(s) failed:\n" + "\n".join(failures)
        )
