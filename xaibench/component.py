"""The base class every registered component derives from.

Components are small pydantic models: their fields are their options, validated on construction
(unknown options are errors, values are frozen), and class variables carry metadata the runner and
the leaderboards use (display name, citation, a version that changes whenever scores would).
This replaces ``**kwargs`` sinks, whose typos silently change nothing.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from xaibench.errors import InvalidOptionsError

#: Largest seed: NumPy's legacy ``np.random.seed`` takes 32-bit seeds, and every run seeds it.
MAX_SEED = 2**32 - 1

#: A seed every generator of a run accepts (Python, NumPy, torch): 0 to :data:`MAX_SEED`.
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class Component(BaseModel):
    """Base of all pluggable components: validated, immutable options plus metadata.

    Attributes:
        display_name: Human-readable name for tables; defaults to the registry name.
        citation: Where the method comes from, for the docs and the report.
        version: Bump whenever a change alters the numbers this component produces, so cached
            results and leaderboards never mix versions silently.
    """

    # allow_inf_nan=False: an option of inf or NaN (`.inf` in YAML) is refused up front instead
    # of failing a cell, or silently giving NaN scores, hours later.
    model_config = ConfigDict(
        frozen=True, extra="forbid", arbitrary_types_allowed=True, allow_inf_nan=False
    )

    display_name: ClassVar[str] = ""
    citation: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    #: Options that make the component cheap on a tiny model (a few 32 px images), for the
    #: conformance kit and the tests that run every registered component. Never applied to a
    #: user's run: a metric's defaults are sized for real use (Quantus's 200 noisy draws per
    #: image, every layer randomised in turn), which takes minutes per method on a tiny model.
    smoke_options: ClassVar[dict[str, Any]] = {}

    def options(self) -> dict[str, Any]:
        """Return the validated options as plain JSON-able data (for results files)."""
        return self.model_dump(mode="json")


def build_component(cls: type[Component], options: dict[str, Any], *, label: str) -> Component:
    """Construct ``cls`` from ``options``, turning validation errors into one-line user errors.

    Args:
        cls: The component class.
        options: Keyword options.
        label: How to name the component in the message, e.g. ``"perturbation 'mean'"``.

    Raises:
        InvalidOptionsError: The options do not validate; the message names each bad option.
    """
    try:
        return cls(**options)
    except ValidationError as exc:
        import difflib

        known = sorted(cls.model_fields)
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(options)"
            if err["type"] == "extra_forbidden":
                close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.append(
                    f"{where}: unknown option{hint} (options: {', '.join(known) or 'none'})"
                )
            else:
                problems.append(f"{where}: {err['msg']}")
        raise InvalidOptionsError(
            f"bad options for {label}: {'; '.join(problems)}", problems
        ) from None
