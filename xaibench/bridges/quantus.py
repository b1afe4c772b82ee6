"""``quantus:<Metric>``: Quantus's evaluation metrics, by name, recorded like native metrics.

Each Quantus 0.6 metric that can be computed from what a cell has (the model, the explained
images, their maps, the explained class, region masks) is registered under its Quantus class
name and mapped to the xaibench metric kind that feeds it those inputs:

* localisation metrics -> :class:`~xaibench.metrics.base.SaliencyRegionMetric` (maps and one
  region mask; chance level and normalised score like the native region metrics);
* complexity metrics -> :class:`~xaibench.metrics.base.MapMetric` (the maps alone; floor: the
  metric on i.i.d. uniform noise maps);
* faithfulness, robustness, randomisation and axiomatic metrics ->
  :class:`~xaibench.metrics.base.ExplainerMetric` (:mod:`xaibench.bridges.quantus_explainer`).

The names, their kinds and the metrics left out (with the reason) are in
:mod:`xaibench.bridges.quantus_names`; ``docs/bridges/quantus.md`` documents each one.

Options: ``init_kwargs`` passes keyword arguments to the Quantus metric's constructor, checked
against its signature (an unknown key names the valid ones). Everything else is Quantus's own
default (``abs``, ``normalise``, the perturbation baselines, ``softmax`` at call time), except
what xaibench's per-image recording needs: ``return_aggregate=False``,
``disable_warnings=True``, ``display_progressbar=False``, and the per-metric reductions
documented in :mod:`xaibench.bridges.quantus_explainer`. Direction (``higher_is_better``)
is Quantus's ``score_direction``.

Quantus draws from NumPy's global generator (and some metrics reseed it, or torch's): every
call runs inside :func:`quantus_context`, which seeds NumPy, Python and torch from a seed drawn
from the cell's generator and restores all three states afterwards. Quantus 0.6 calls
``np.trapz``, which NumPy 2 removed; the context supplies it (as ``np.trapezoid``, the same
rule) for the duration of the call only.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import random
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field, model_validator

from xaibench.metrics.base import ExplainerMetric, MapMetric, Metric, SaliencyRegionMetric
from xaibench.metrics.chance import AREA_FRACTION, DEFAULT_DRAWS, HALF, ChanceLevel

#: Constructor arguments xaibench sets itself (the values are what per-image recording needs).
FIXED_OPTIONS: dict[str, Any] = {
    "return_aggregate": False,
    "disable_warnings": True,
    "display_progressbar": False,
}

#: NumPy 2 removed ``np.trapz``, which Quantus 0.6 calls; supplied during a call only.
_TRAPZ = "trapz"

#: Citation of the library, shown with every bridged metric.
QUANTUS_CITATION = (
    "Hedström et al., Quantus: an explainable AI toolkit for responsible evaluation of neural "
    "network explanations and beyond, JMLR 24(34):1-11, 2023"
)


def quantus_class(name: str) -> type:
    """The installed Quantus metric class ``name`` (``PointingGame``)."""
    import quantus

    cls = getattr(quantus, name, None)
    if not isinstance(cls, type):
        raise ValueError(f"Quantus {quantus.__version__} has no metric {name!r}")
    return cls


def valid_options(cls: type) -> list[str]:
    """Constructor keywords of a Quantus metric class a user may pass (sorted)."""
    params = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    skip = {"self", "args", "kwargs", "aggregate_func", "default_plot_func", *FIXED_OPTIONS}
    return sorted(
        p
        for p, param in params.items()
        if p not in skip and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD)
    )


def check_options(name: str, options: dict[str, Any]) -> None:
    """Raise ``ValueError`` (one line) for a key that ``quantus.<name>`` does not take."""
    valid = valid_options(quantus_class(name))
    for key in options:
        if key not in valid:
            fixed = " (xaibench sets it)" if key in FIXED_OPTIONS else ""
            raise ValueError(
                f"Quantus {name} takes no option {key!r}{fixed}; its options: {', '.join(valid)}"
            )


def make_metric(name: str, options: dict[str, Any]) -> Any:
    """A fresh Quantus metric object: ``options`` over the xaibench-fixed arguments."""
    with _quiet():
        return quantus_class(name)(**{**options, **FIXED_OPTIONS})


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence Quantus's prints and warnings (undefined values come back as NaN instead)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def quantus_context(seed: int | None = None) -> Iterator[None]:
    """Run Quantus seeded, quietly, with ``np.trapz``; restore every global it touches.

    Args:
        seed: Seeds NumPy's, Python's and torch's global generators for the call (None: left
            as they are, for metrics that draw nothing); their states are restored on exit.
    """
    np_state = np.random.get_state()
    py_state = random.getstate()
    devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    added_trapz = not hasattr(np, _TRAPZ)
    if added_trapz:
        setattr(np, _TRAPZ, np.trapezoid)
    try:
        with torch.random.fork_rng(devices=devices), _quiet():
            if seed is not None:
                np.random.seed(seed)
                random.seed(seed)
                torch.manual_seed(seed)
            yield
    finally:
        if added_trapz:
            delattr(np, _TRAPZ)
        np.random.set_state(np_state)
        random.setstate(py_state)


def draw_seed(generator: torch.Generator) -> int:
    """A 31-bit seed from the cell's generator (NumPy's legacy seeding takes 32 bits)."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


def as_values(scores: Any, name: str, n: int) -> torch.Tensor:
    """Quantus's per-instance scores as a float64 ``[n]`` tensor (bools as 0/1, None as NaN)."""
    if isinstance(scores, dict) or len(scores) != n:
        raise ValueError(f"Quantus {name} returned no single value per image")
    flat = [float("nan") if v is None else float(np.asarray(v, dtype=np.float64)) for v in scores]
    return torch.tensor(flat, dtype=torch.float64)


def run_quantus(metric: Any, name: str, **call: Any) -> list[Any]:
    """Call a Quantus metric object; its assertion failures become one-line ``ValueError``.

    A batch whose maps are all one constant (an untrained model's ReLU'd CAM is often all zero)
    gives ``None`` per image, NaN once recorded: such maps rank nothing, and Quantus refuses the
    whole batch (it asserts on the batch, not per image). The runner reports constant maps in
    ``details.constant_maps``.
    """
    a_batch = call.get("a_batch")
    if a_batch is not None and np.size(a_batch) and np.min(a_batch) == np.max(a_batch):
        return [None] * len(a_batch)
    try:
        return metric(channel_first=True, **call)
    except AssertionError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "an assertion failed"
        raise ValueError(f"Quantus {name}: {first}") from None


class QuantusBridged(Metric):
    """Options shared by every ``quantus:`` metric.

    Attributes:
        quantus_name: Overridden per registered class: the Quantus class it runs.
    """

    quantus_name: ClassVar[str] = ""
    citation: ClassVar[str] = QUANTUS_CITATION

    bridged: str = Field(description="The Quantus metric class (preset by the registered name).")
    init_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of the Quantus metric's constructor (checked against it).",
    )

    @model_validator(mode="after")
    def _check_bridged(self) -> QuantusBridged:
        if self.quantus_name and self.bridged != self.quantus_name:
            raise ValueError(f"this class runs Quantus {self.quantus_name}, not {self.bridged!r}")
        check_options(self.bridged, self.init_kwargs)
        return self

    def quantus_options(self) -> dict[str, Any]:
        """The constructor options: the user's, over the bridge's defaults for this metric."""
        return dict(self.init_kwargs)


def _float_images(maps: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``a_batch`` ``[B, 1, H, W]`` from maps and a zero ``x_batch`` of its shape."""
    a = maps.detach().cpu().float().numpy()[:, None]
    return np.zeros_like(a), a


class QuantusRegionMetric(QuantusBridged, SaliencyRegionMetric):
    """A Quantus localisation metric as a region metric: maps and a region mask per image.

    Quantus reads ``x_batch`` only for its shape here, so a zero image of the maps' shape
    stands in; the model is not called. Images with an empty region are NaN (Quantus's
    pointing game would call them hits). Options that put the score on a region-dependent
    scale (:attr:`scale_options`, e.g. ``weighted``) drop the chance level and normalised
    score, as for a metric without ``best``.
    """

    #: Options whose truthy value changes the score's scale (no chance level then).
    scale_options: ClassVar[tuple[str, ...]] = ()

    def per_sample(self, maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Quantus's per-image scores of ``maps`` against ``masks``, float64 ``[B]``."""
        x, a = _float_images(maps)
        s = masks.detach().cpu().numpy().astype(bool)[:, None]
        y = np.zeros(len(a), dtype=np.int64)
        with quantus_context():
            metric = make_metric(self.bridged, self.quantus_options())
            scores = run_quantus(
                metric, self.bridged, model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s,
                explain_func=None, explain_func_kwargs=None, batch_size=max(len(a), 1),
            )  # fmt: skip
        values = as_values(scores, self.bridged, len(a))
        empty = ~torch.from_numpy(s.reshape(len(s), -1).any(axis=1))
        return values.masked_fill(empty, float("nan"))

    def per_sample_regions(
        self, maps: torch.Tensor, masks: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Every region in one Quantus call: the maps repeated once per region.

        The same as one call per region, value for value: the stacked batch holds the same
        maps, so Quantus's batch-wide normalisation divides by the same maximum.
        """
        names = list(masks)
        if len(names) < 2:
            return super().per_sample_regions(maps, masks)
        stacked = self.per_sample(
            maps.repeat(len(names), 1, 1), torch.cat([masks[n] for n in names])
        ).reshape(len(names), len(maps))
        return dict(zip(names, stacked, strict=True))

    def chance(
        self,
        maps: torch.Tensor,
        masks: torch.Tensor,
        generator: torch.Generator,
        draws: int = DEFAULT_DRAWS,
    ) -> ChanceLevel | None:
        """The class's chance level, or None when a scale option is set."""
        if any(self.init_kwargs.get(option) for option in self.scale_options):
            return None
        return super().chance(maps, masks, generator, draws)


class QuantusMapMetric(QuantusBridged, MapMetric):
    """A Quantus complexity metric as a map metric: the maps alone, once per image.

    ``x_batch`` is a zero image of the maps' shape (read for its shape only); no model call.
    """

    def per_sample(self, maps: torch.Tensor) -> torch.Tensor:
        """Quantus's per-image scores of ``maps``, float64 ``[B]``."""
        x, a = _float_images(maps)
        y = np.zeros(len(a), dtype=np.int64)
        with quantus_context():
            metric = make_metric(self.bridged, self.quantus_options())
            scores = run_quantus(
                metric, self.bridged, model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=None,
                explain_func=None, explain_func_kwargs=None, batch_size=max(len(a), 1),
            )  # fmt: skip
        return as_values(scores, self.bridged, len(a))


def _direction(name: str) -> bool:
    """Quantus's ``score_direction`` of ``name``: True where higher is better."""
    from quantus.helpers.enums import ScoreDirection

    direction = getattr(quantus_class(name), "score_direction", None)
    return bool(direction == ScoreDirection.HIGHER)


def bridged_class(base: type[QuantusBridged], name: str, **class_vars: Any) -> type:
    """A registered class for Quantus metric ``name`` on ``base`` (direction from Quantus)."""
    kind = next(
        c.__name__ for c in base.__mro__ if c in (SaliencyRegionMetric, MapMetric, ExplainerMetric)
    )
    namespace = {
        "__doc__": f"Quantus {name}, bridged as a {kind} (docs/bridges/quantus.md).",
        "__module__": base.__module__,
        "__annotations__": {},
        "quantus_name": name,
        "display_name": f"quantus:{name}",
        "higher_is_better": _direction(name),
        **class_vars,
    }
    return type(f"Quantus{name}", (base,), namespace)


#: Localisation: class variables of each region metric (best, hits, chance rule, scale options).
REGION_METRICS: dict[str, dict[str, Any]] = {
    # the peak pixel in the region; tied peaks anywhere inside count (the shift null's case)
    "PointingGame": {"best": 1.0, "hits": True, "scale_options": ("weighted",)},
    # share of |attribution| inside; NaN when a signed map's share exceeds 1: the shift null
    "AttributionLocalisation": {"best": 1.0, "scale_options": ("weighted",)},
    # a ratio of sums, linear in the mask: expectation under any relocation is the area fraction
    "RelevanceMassAccuracy": {"best": 1.0, "exact_chance": AREA_FRACTION},
    # share of the |R| top-ranked pixels inside: each lands inside with probability |R|/N
    "RelevanceRankAccuracy": {"best": 1.0, "exact_chance": AREA_FRACTION},
    # share of the k top-ranked pixels inside (times N/|R| with concept_influence)
    "TopKIntersection": {
        "best": 1.0,
        "exact_chance": AREA_FRACTION,
        "scale_options": ("concept_influence",),
    },
    # pixel ROC AUC of the map against the region: 0.5 under any relocation
    "AUC": {"best": 1.0, "exact_chance": HALF},
}

#: Complexity metrics (map metrics; floor: i.i.d. uniform noise maps).
MAP_METRICS: tuple[str, ...] = ("Sparseness", "Complexity", "EffectiveComplexity")

_CLASSES: dict[str, type] = {}
for _name, _vars in REGION_METRICS.items():
    _CLASSES[f"Quantus{_name}"] = bridged_class(QuantusRegionMetric, _name, **_vars)
for _name in MAP_METRICS:
    _CLASSES[f"Quantus{_name}"] = bridged_class(QuantusMapMetric, _name)
globals().update(_CLASSES)
