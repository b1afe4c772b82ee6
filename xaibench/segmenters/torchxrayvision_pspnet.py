"""Built-in segmenter ``torchxrayvision_pspnet``: TorchXRayVision's chest-anatomy PSPNet.

TorchXRayVision's ``xrv.baseline_models.chestx_det.PSPNet`` (trained on ChestX-Det) segments 14
structures of a frontal chest radiograph. This segmenter runs it through TorchXRayVision's own
model class, weight loading and preprocessing, and maps its labels to xaibench's region names.

Weights. ``PSPNet(cache_dir=FOLDER)`` reads ``FOLDER/pspnet_chestxray_best_model_4.pth`` (default
``FOLDER``: ``~/.torchxrayvision/models_data/``, TorchXRayVision's ``utils.get_cache_dir()``) and
*downloads it when it is absent*. xaibench never downloads at run time, so the file is looked for
first and a missing file is a one-line :class:`~xaibench.errors.XaibenchError` naming the file, the
folder and where to get it. The ``weights`` option names that file, or a folder holding it; the
file keeps TorchXRayVision's name because its constructor reads it by name. TorchXRayVision 1.5
reads it with ``torch.load(weights_only=True)`` (no unpickling of code) and strips the
``module.`` prefix of the DataParallel state dict it was saved from, so its own loading code is
used as it is. The file's SHA-256 goes into :meth:`TorchXRayVisionPSPNet.provenance`.

Preprocessing (TorchXRayVision's). Raw images in [0, 1] are scaled to [-1024, 1024] with
``xrv.utils.normalize(img, 1)`` and handed to ``PSPNet.forward``, which repeats the channel three
times, resizes to 512 x 512 (bilinear, antialiased: ``xrv.utils.fix_resolution``), maps back to
[0, 1] and applies ImageNet normalisation. ``forward`` needs a square image; TorchXRayVision's
demo centre-crops, which would leave the image's edges without masks, so a non-square image is
instead padded to a square with black (``fit: pad``, the default: anatomy keeps its aspect ratio)
or stretched to 512 x 512 (``fit: stretch``).

Masks. The network returns one logit map per structure (structures overlap: heart, mediastinum and
lungs share pixels), so each is thresholded on its own: ``sigmoid(logit) > threshold`` (0.5, as in
TorchXRayVision's segmentation notebook). The 512 x 512 masks go back to the image grid by
nearest neighbour (each image pixel takes the mask pixel under its centre), which also drops the
padding.

Sides. ChestX-Det's "Left" is the **patient's** left, which a standard frontal (PA/AP) display
shows on the image's **right**: TorchXRayVision's notebook output puts "Left Lung" and the heart
on the image's right half. ``left_lung`` etc. keep that meaning (patient's side).

``bone`` is the union of clavicles, scapulae and spine: the model has no ribs, so it is narrower
than the reference study's bone mask, which includes the ribs.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, PrivateAttr

from xaibench.errors import XaibenchError
from xaibench.segmenters.base import Segmenter

if TYPE_CHECKING:
    import torch

#: Registry name (recorded in the provenance).
NAME = "torchxrayvision_pspnet"

#: The file name TorchXRayVision's ``PSPNet`` reads from its cache folder.
WEIGHTS_NAME = "pspnet_chestxray_best_model_4.pth"

#: Where TorchXRayVision downloads it from (for the message; xaibench never downloads).
WEIGHTS_URL = f"https://github.com/mlmed/torchxrayvision/releases/download/v1/{WEIGHTS_NAME}"

#: The network's input size (TorchXRayVision resizes to it).
INPUT_SIZE = 512

#: The deprecation warning TorchXRayVision's PSPNet raises on every forward pass.
_UPSAMPLE_DEPRECATED = r"`nn\.functional\.upsample` is deprecated"

#: TorchXRayVision's label (``PSPNet.targets``, in output-channel order) -> xaibench's name.
XRV_LABELS: dict[str, str] = {
    "Left Clavicle": "left_clavicle",
    "Right Clavicle": "right_clavicle",
    "Left Scapula": "left_scapula",
    "Right Scapula": "right_scapula",
    "Left Lung": "left_lung",
    "Right Lung": "right_lung",
    "Left Hilus Pulmonis": "left_hilus",
    "Right Hilus Pulmonis": "right_hilus",
    "Heart": "heart",
    "Aorta": "aorta",
    "Facies Diaphragmatica": "diaphragm",
    "Mediastinum": "mediastinum",
    "Weasand": "trachea",
    "Spine": "spine",
}

#: Regions made as unions of the network's structures (xaibench name -> its parts).
UNIONS: dict[str, tuple[str, ...]] = {
    "clavicles": ("left_clavicle", "right_clavicle"),
    "scapulae": ("left_scapula", "right_scapula"),
    "lungs": ("left_lung", "right_lung"),
    "bone": ("left_clavicle", "right_clavicle", "left_scapula", "right_scapula", "spine"),
}

#: Every region :meth:`TorchXRayVisionPSPNet.segment` returns, in order.
REGIONS: tuple[str, ...] = (
    "left_clavicle",
    "right_clavicle",
    "clavicles",
    "left_scapula",
    "right_scapula",
    "scapulae",
    "left_lung",
    "right_lung",
    "lungs",
    "left_hilus",
    "right_hilus",
    "heart",
    "aorta",
    "diaphragm",
    "mediastinum",
    "trachea",
    "spine",
    "bone",
)


def _import_xrv() -> Any:
    try:
        import torchxrayvision
    except ImportError:
        raise XaibenchError(
            "segmenter 'torchxrayvision_pspnet' needs torchxrayvision: pip install torchxrayvision"
        ) from None
    return torchxrayvision


def _nearest(count: int, offset: int, grid: int, device: torch.device) -> torch.Tensor:
    """Nearest-neighbour source index on the network's grid for ``count`` output pixels.

    Output pixel ``i`` sits at ``offset + i`` on a ``grid``-pixel axis that the network saw as
    :data:`INPUT_SIZE` pixels; it takes the source pixel under its centre,
    ``floor((offset + i + 0.5) * INPUT_SIZE / grid)``, computed in integers (exact; torch's
    ``nearest-exact`` computes it in floats and can round a tie the other way). Indexing the
    512-pixel masks this way, instead of resizing them to the whole padded square first, keeps
    memory at the image's size.
    """
    import torch

    centre = 2 * (torch.arange(count, device=device) + offset) + 1
    index = torch.div(centre * INPUT_SIZE, 2 * grid, rounding_mode="floor")
    return index.clamp(max=INPUT_SIZE - 1)


class TorchXRayVisionPSPNet(Segmenter):
    """TorchXRayVision's ChestX-Det PSPNet: 14 chest structures, mapped to xaibench's names.

    Attributes:
        weights: ``pspnet_chestxray_best_model_4.pth`` or the folder that holds it; default
            TorchXRayVision's cache folder ``~/.torchxrayvision/models_data/``.
        threshold: A pixel belongs to a structure when ``sigmoid(logit) > threshold``.
        fit: How a non-square image becomes the network's square input: ``pad`` (black borders,
            aspect ratio kept) or ``stretch``.
    """

    display_name: ClassVar[str] = "TorchXRayVision PSPNet (ChestX-Det)"
    citation: ClassVar[str] = (
        "Lian et al., A Structure-Aware Relation Network for Thoracic Diseases Detection and "
        "Segmentation, IEEE TMI 2021; Cohen et al., TorchXRayVision, MIDL 2022"
    )
    regions: ClassVar[tuple[str, ...]] = REGIONS
    weights_hint: ClassVar[str] = (
        f"place {WEIGHTS_NAME} (from {WEIGHTS_URL}) in ~/.torchxrayvision/models_data/, "
        "TorchXRayVision's cache folder, or pass its path as the option weights"
    )

    weights: Path | None = None
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    fit: Literal["pad", "stretch"] = "pad"

    _model: Any = PrivateAttr(default=None)
    _device: Any = PrivateAttr(default=None)
    _path: Path | None = PrivateAttr(default=None)
    _sha256: str | None = PrivateAttr(default=None)

    def weights_file(self) -> Path:
        """The weight file TorchXRayVision will read (it must exist).

        Raises:
            XaibenchError: It is missing, or ``weights`` names a file with another name.
        """
        if self.weights is None:
            folder = Path(_import_xrv().utils.get_cache_dir()).expanduser()
            where = "TorchXRayVision's cache folder"
        else:
            given = self.weights.expanduser()
            if not given.exists():
                raise XaibenchError(
                    f"option weights: {str(given)!r} does not exist (give {WEIGHTS_NAME} "
                    "or the folder that holds it)"
                )
            if given.is_file():
                if given.name != WEIGHTS_NAME:
                    raise XaibenchError(
                        f"option weights: {str(given)!r} is not named {WEIGHTS_NAME}; "
                        "TorchXRayVision reads the file by that name from its folder: rename it"
                    )
                return given
            folder, where = given, "the folder given as option weights"
        path = folder / WEIGHTS_NAME
        if not path.is_file():
            raise XaibenchError(
                f"segmenter {NAME!r}: weights file {str(path)!r} is missing: place "
                f"{WEIGHTS_NAME} (download it from {WEIGHTS_URL}) in {where} {str(folder)!r}, "
                "or pass its path as the option weights; xaibench never downloads weights"
            )
        return path

    def load(self, device: torch.device) -> None:
        """Build TorchXRayVision's ``PSPNet`` from the local file, in eval mode on ``device``."""
        from xaibench.models.weights import file_sha256

        xrv = _import_xrv()
        path = self.weights_file()  # checked first: PSPNet() would download a missing file
        self._path, self._sha256 = path, file_sha256(path)
        try:
            # TorchXRayVision prints its progress and failures; keep xaibench's stdout clean.
            with contextlib.redirect_stdout(io.StringIO()):
                model = xrv.baseline_models.chestx_det.PSPNet(cache_dir=str(path.parent))
        except Exception as exc:  # any reading failure: torch's, pickle's, state-dict keys
            raise XaibenchError(
                f"segmenter {NAME!r}: cannot load weights file {str(path)!r}: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            ) from None
        if list(model.targets) != list(XRV_LABELS):
            raise XaibenchError(
                f"segmenter {NAME!r}: torchxrayvision {xrv.__version__} names other structures "
                f"({', '.join(model.targets)}); this segmenter maps {', '.join(XRV_LABELS)}"
            )
        self._model = model.to(device).eval()
        self._device = device

    def segment(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Masks of every region for raw ``images`` ``[B, 1, H, W]`` in [0, 1].

        Raises:
            XaibenchError: :meth:`load` was not called, or the images are not ``[B, 1, H, W]``
                in [0, 1].
        """
        import numpy as np
        import torch
        import torch.nn.functional as F

        if self._model is None:
            raise XaibenchError(f"segmenter {NAME!r}: call load(device) before segment()")
        if images.ndim != 4 or images.shape[1] != 1:
            raise XaibenchError(
                f"segmenter {NAME!r}: images must be [B, 1, H, W], got {list(images.shape)}"
            )
        xrv = _import_xrv()
        _, _, height, width = images.shape
        raw = images.detach().float().cpu().numpy()
        if raw.size and not (np.isfinite(raw).all() and raw.min() >= 0.0 and raw.max() <= 1.0):
            raise XaibenchError(f"segmenter {NAME!r}: images must be raw values in [0, 1]")
        x = torch.from_numpy(xrv.utils.normalize(raw, 1.0)).to(self._device)
        side = max(height, width)
        top, left = (side - height) // 2, (side - width) // 2
        if self.fit == "pad":
            black = -1024.0  # raw 0 after xrv.utils.normalize
            x = F.pad(x, (left, side - width - left, top, side - height - top), value=black)
        elif height != width:
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True)
        with (
            torch.inference_mode(),
            contextlib.redirect_stdout(io.StringIO()),
            warnings.catch_warnings(),
        ):
            # TorchXRayVision's PSPNet still calls F.upsample (same result as F.interpolate).
            warnings.filterwarnings("ignore", _UPSAMPLE_DEPRECATED, UserWarning)
            logits = self._model(x)  # [B, 14, 512, 512]; PSPNet.forward does the rest
            found = torch.sigmoid(logits) > self.threshold
            if self.fit == "pad":  # the image's pixels within the padded square
                rows = _nearest(height, top, side, found.device)
                cols = _nearest(width, left, side, found.device)
            else:
                rows = _nearest(height, 0, height, found.device)
                cols = _nearest(width, 0, width, found.device)
            found = found.index_select(2, rows).index_select(3, cols)
        masks = {name: found[:, i] for i, name in enumerate(XRV_LABELS.values())}
        for union, parts in UNIONS.items():
            combined = masks[parts[0]].clone()
            for part in parts[1:]:
                combined |= masks[part]
            masks[union] = combined
        return {name: masks[name].to(images.device) for name in REGIONS}

    def provenance(self) -> dict[str, Any]:
        """Segmenter, version, options, weights file name and SHA-256, library versions."""
        import torch

        from xaibench.models.weights import file_sha256

        xrv = _import_xrv()
        path = self._path if self._path is not None else self.weights_file()
        sha = self._sha256 if self._sha256 is not None else file_sha256(path)
        options = self.options()
        if options.get("weights") is not None:
            options["weights"] = path.name  # never a folder: it may hold a user's name
        return {
            "segmenter": NAME,
            "version": self.version,
            "options": options,
            "weights": {"file": path.name, "sha256": sha},
            "torchxrayvision": xrv.__version__,
            "torch": torch.__version__,
            "labels": dict(XRV_LABELS),
            "unions": {k: list(v) for k, v in UNIONS.items()},
        }
