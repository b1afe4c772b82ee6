"""The names the ``zennit:`` bridge registers (static: listing imports nothing heavy).

Every composite in ``zennit.composites.COMPOSITES`` by its class name (a test checks this table
against the installed package).
"""

from __future__ import annotations

from xaibench.bridges.extras import BridgedName

_TARGET = "xaibench.bridges.zennit:ZennitBridge"

#: ``(name, summary)`` of every bridged zennit composite.
_COMPOSITES: tuple[tuple[str, str], ...] = (
    ("BetaSmooth", "gradient with ReLUs' backward smoothed as softplus (beta 10)"),
    ("DeconvNet", "DeconvNet: ReLU backward on the relevance only"),
    ("EpsilonAlpha2Beta1", "LRP: alpha2-beta1 on convolutions, epsilon on dense layers"),
    ("EpsilonAlpha2Beta1Flat", "LRP: as EpsilonAlpha2Beta1, flat rule on the first layer"),
    (
        "EpsilonGammaBox",
        "LRP: z-box on the first layer (bounds from the raw range), gamma, epsilon",
    ),
    ("EpsilonPlus", "LRP: z-plus on convolutions, epsilon on dense layers"),
    ("EpsilonPlusFlat", "LRP: as EpsilonPlus, flat rule on the first layer"),
    (
        "ExcitationBackprop",
        "excitation backprop (z-plus everywhere, probabilistic winner-take-all)",
    ),
    ("GuidedBackprop", "guided backpropagation: ReLU backward gated by input and gradient"),
)

NAMES: tuple[BridgedName, ...] = tuple(
    BridgedName(name, _TARGET, f"zennit {name} (CNN): {what}") for name, what in _COMPOSITES
)
