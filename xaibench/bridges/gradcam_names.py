"""The names the ``gradcam:`` bridge registers (static: listing imports nothing heavy).

Every method class pytorch-grad-cam exports that takes ``target_layers`` (a test checks this
table against the installed package). Left out on purpose: ``GuidedBackpropReLUModel`` (not a
CAM; it swaps the model's ``ReLU`` modules for new ones and back, losing their ``inplace``
flags; zennit's ``GuidedBackprop`` composite covers it), ``DeepFeatureFactorization`` (returns
concepts, not a map per target), and the helpers ``ActivationsAndGradients`` and
``AblationLayer*``.
"""

from __future__ import annotations

from xaibench.bridges.extras import BridgedName

_TARGET = "xaibench.bridges.gradcam:GradCAMBridge"
_CONTROL = "xaibench.bridges.gradcam:GradCAMControlBridge"

#: ``(name, summary)`` of every bridged pytorch-grad-cam method.
_METHODS: tuple[tuple[str, str], ...] = (
    ("AblationCAM", "channel weights from the score drop when each channel is ablated"),
    ("EigenCAM", "first principal component of the CAM layer (class-agnostic)"),
    ("EigenGradCAM", "first principal component of activation x gradient"),
    ("FEM", "feature explanation method: k-sigma channel masks (class-agnostic)"),
    ("FinerCAM", "Grad-CAM of the target against its most similar classes"),
    ("FullGrad", "input-gradient and bias-gradient maps of every conv/BN layer (CNN)"),
    ("GradCAM", "channel weights = spatial mean of the gradient"),
    ("GradCAMElementWise", "ReLU of activation x gradient, summed over channels"),
    ("GradCAMPlusPlus", "Grad-CAM++ with pytorch-grad-cam's 1e-6 in the alpha denominator"),
    ("HiResCAM", "activation x gradient summed over channels (no spatial averaging)"),
    ("KPCA_CAM", "first kernel-PCA component of the CAM layer (class-agnostic)"),
    ("LayerCAM", "activation x positive gradient, summed over channels"),
    ("RefineCAM", "product of per-layer CAMs (Grad-CAM++ by default)"),
    ("SESS", "any CAM over scaled, sliding patches, fused (Grad-CAM by default)"),
    ("ScoreCAM", "channel weights from the score of the image masked by each channel"),
    ("SegEigenCAM", "sign-corrected first principal component of |gradient| x activation"),
    ("ShapleyCAM", "gradient and Hessian-vector-product channel weights (CNN)"),
    ("XGradCAM", "activation-normalised gradient weights (axiom-based Grad-CAM)"),
)

NAMES: tuple[BridgedName, ...] = (
    *(BridgedName(name, _TARGET, f"pytorch-grad-cam {name}: {what}") for name, what in _METHODS),
    BridgedName(
        "RandomCAM",
        _CONTROL,
        "pytorch-grad-cam RandomCAM: uniform random channel weights (control)",
    ),
)
