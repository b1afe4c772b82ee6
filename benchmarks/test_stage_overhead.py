"""Stage overheads: each stage of a cell against plain PyTorch (or captum) code doing the same
passes on the same model and the same data, timed in the same process.

Every figure is a ratio of medians from :mod:`timing` (xaibench's path and its baseline take
turns, so drift in machine load hits both alike), printed and stored in the row's
``extra_info``. Where both sides compute the same thing their outputs are checked equal first
(bit for bit), so each comparison is honest. Nothing is asserted about time.

1. **Evaluation**: :func:`xaibench.engine.runner.predict_log_probs` on the test split (batches read
   from the scratch files and decoded) against ``log_softmax(model(batch).double())`` over the
   same images already in memory, on the default grid's DINOv2-style ViT, on its fastest model
   (where a fixed cost per image, such as decoding the stored 16-bit images, shows most) and on
   a randomly
   initialised ResNet-18 (a real network's cost per image). Target <= 1.05.
2. **Training**: ``GradientStrategy.fit`` (``lora``, 2 epochs on the 280 training images)
   against a plain loop with the same optimiser, schedule, class weights, batches and steps,
   the same per-epoch validation pass (loss and AUC) and a best-epoch checkpoint of what trains,
   on images in memory; the trained weights must come out equal. Target <= 1.05.
3. **Saliency**: the runner's explanation stage (``CellRunner._explain``: batches read, maps,
   constant-map count, drift grids, galleries; no metrics and no sanity checks, which are costs
   of their own) against captum called directly on the same batches in memory: ``Saliency`` on
   the DINOv2-style ViT, ``LayerGradCam`` (upsampled as Grad-CAM is) on the CAM layer of a CNN
   (captum's Grad-CAM is only right for CNN maps; xaibench's own serves ViTs too), both on the
   frozen backbone of a linear probe. Also reported: xaibench's method alone on those batches.
   Target <= 1.05.
4. **Delta_region**: ``CellRunner._perturb`` (each perturbation x region, and the complement,
   on the test split: perturbed, predicted, scored with its bootstrap interval) against, per
   perturbation x region, ``apply`` plus one plain forward pass over the test images in memory.
   Also reported: the stage's perturbed predictions alone, without the scoring. Target <= 1.10.
   ``inpaint`` is left out: its cost is the same on both sides and would hide the rest.
5. **Linear probe**: ``LinearProbe.fit`` with the frozen features in the disk cache against the
   same fit extracting them, on the DINOv2-style ViT and a random ResNet-18. Target >= 10x.
   Cached, the fit is 300 full-batch steps of the head (tens of milliseconds of per-step
   PyTorch overhead), so the factor is the cost of one pass of the backbone over train and
   validation images against that: small for the tiny models, large for any real one.
6. **Batch source vs model**: images/s of the runner's batch source (test batches with the
   region masks the explanation stage reads; shuffled training batches), against images/s of
   the model's forward pass on a batch, for the default grid's tiny backbones and a randomly
   initialised ResNet-18. Target: the source > 2x the model.

The data is a 400-image phantom at the default 128 px (train 280, val 41, test 79), split and
streamed to scratch files by :func:`xaibench.engine.runner.prepare_data`; the caches and scratch
files live in a temporary folder for the session. Torch runs on one thread here (see
:func:`threads`). On small models the figures also move with glibc's heap trimming, which
page-faults large temporaries back in on some batches and not others (the same code measured 1.05
and 1.4 for the fastest model's evaluation in two processes); ``MALLOC_MMAP_THRESHOLD_=33554432
MALLOC_TRIM_THRESHOLD_=1000000000`` in the environment steadies them.

Run ``python -m pytest benchmarks/test_stage_overhead.py --benchmark-only -s`` (about two
minutes on two shared cores).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may wait on a model hub

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timing import interleaved, interleaved_medians

from xaibench.cache import TensorCache
from xaibench.config import ComponentRef, RunConfig, resolve_config
from xaibench.device import Runtime
from xaibench.engine.grid import create_backbone
from xaibench.engine.runner import (
    CellResult,
    CellRunner,
    RunData,
    predict_log_probs,
    predictions_from_log_probs,
    prepare_data,
    seed_everything,
)
from xaibench.metrics.functional import binary_auc, youden_threshold
from xaibench.models.base import Classifier
from xaibench.models.timm_backbone import TimmBackbone
from xaibench.plugins import Components, collect_components, get_plugin_manager
from xaibench.progress import NullProgress
from xaibench.strategies.base import FitContext

N_IMAGES, SIZE = 400, 128
SHARES = [0.45, 0.30, 0.25]
EPOCHS, BATCH, EVAL_BATCH = 2, 32, 64
VIT = "dinov2_tiny.random"  # the default grid's timm ViT
FAST_VIT = "rad_dino_tiny.random"  # the default grid's fastest model: overheads show most
QUICK = ("openclip_tiny.random", VIT, "chexagent_siglip_tiny.random", FAST_VIT)
CNN = {"name": "test_resnet.random", "options": {"img_size": 64}}
PERTURBATIONS = ["mean", "zero", "blur"]
THREADS_ENV = "XAIBENCH_BENCH_THREADS"


def show(benchmark: Any, name: str, value: float, text: str) -> None:
    """Store ``value`` in the row's ``extra_info`` and print ``text`` past pytest's capture."""
    benchmark.extra_info[name] = round(value, 3)
    print(f"\n{text}")


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


# --- the run's data and models ---------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def threads() -> Iterator[int]:
    """Torch's intra-op threads for this module: ``$XAIBENCH_BENCH_THREADS``, default 1.

    On a shared machine two OpenMP threads wait on each other whenever another process takes a
    core: timings then scatter by up to 10x. One thread times the same passes steadily; set the
    variable to ``0`` for torch's own default (all cores) on an idle machine.
    """
    before = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    wanted = int(os.environ.get(THREADS_ENV, "1")) or before
    torch.set_num_threads(wanted)
    yield wanted
    torch.set_num_threads(before)
    # build_model seeds as the runner does, which also asks for deterministic kernels
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


@pytest.fixture(scope="module")
def components() -> Components:
    return collect_components(get_plugin_manager(entry_points=False))


def config_for(components: Components, **overrides: Any) -> RunConfig:
    """The default osteoporosis run on the small phantom, with ``overrides``."""
    base = {
        "dataset": {
            "name": "phantom",
            "options": {"n_images": N_IMAGES, "image_size": SIZE, "class_shares": SHARES},
        },
        "backbones": [VIT],
        "strategies": ["linear_probe"],
        "train": {"epochs": EPOCHS, "batch_size": BATCH, "eval_batch_size": EVAL_BATCH},
    }
    defaults = components.tasks.create("osteoporosis").defaults()
    return resolve_config(defaults, base, overrides)


@pytest.fixture(scope="module")
def data(components, tmp_path_factory) -> Iterator[RunData]:
    """The splits on scratch files, with the caches and scratch files in a session folder."""
    root = tmp_path_factory.mktemp("stage-overhead")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XAIBENCH_CACHE_DIR", str(root / "cache"))
        mp.setenv("XAIBENCH_SCRATCH_DIR", str(root))
        yield prepare_data(config_for(components), components, NullProgress())


def build_model(components: Components, backbone: Any, strategy: str) -> Classifier:
    """The model a cell of ``backbone`` x ``strategy`` (seed 0) trains, as the runner builds it."""
    seed_everything(0)
    if isinstance(backbone, str) and backbone.startswith("timm:"):
        adapter = TimmBackbone(arch=backbone[5:], img_size=SIZE, random_init=True).create_adapter()
    else:
        ref = ComponentRef.model_validate(backbone)
        factory = create_backbone(components, ref)
        adapter = factory.build(factory.locate_weights(ref.key))
    return components.strategies.create(strategy).prepare(adapter, 3).eval()


def in_memory(rows: Any) -> torch.Tensor:
    """A lazy split array read whole into memory (what the baselines get for free)."""
    return rows[:]


def batches(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


# --- 1. evaluation ------------------------------------------------------------------------------


def plain_predict(model: Classifier, images: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat(
            [
                torch.log_softmax(model(images[s]).double(), dim=1)
                for s in batches(len(images), EVAL_BATCH)
            ]
        )


@pytest.mark.benchmark(group="stage_evaluation")
@pytest.mark.parametrize("backbone", [VIT, FAST_VIT, "timm:resnet18"])
def test_evaluation_vs_plain_loop(benchmark, components, data, backbone):
    model = build_model(components, backbone, "linear_probe")
    test = data.splits["test"]
    images = in_memory(test.images)
    ours = lambda: predict_log_probs(model, test.images, EVAL_BATCH, Runtime())  # noqa: E731
    assert np.array_equal(ours(), plain_predict(model, images).numpy())
    benchmark.pedantic(ours, rounds=3)
    rounds = 5 if backbone.startswith("timm:") else 31  # ResNet-18: about a second a pass
    t_ours, t_plain = interleaved_medians(ours, lambda: plain_predict(model, images), rounds)
    ratio = t_ours / t_plain
    show(
        benchmark,
        "ratio_vs_plain_loop",
        ratio,
        f"evaluation ({backbone}, {len(test)} test images): predict / plain loop on images in "
        f"memory: {ratio:.3f} (target <= 1.05: {verdict(ratio <= 1.05)}; "
        f"{len(test) / t_plain:.0f} images/s plain)",
    )


# --- 2. training --------------------------------------------------------------------------------


def plain_fit(
    model: Classifier,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    lr: float,
    weight_decay: float,
    positive: int,
    seed: int,
) -> int:
    """The training loop written out: AdamW, warm-up-free cosine schedule, balanced class
    weights, shuffled batches (a last batch of one dropped), then per epoch the validation loss
    and AUC, keeping a copy of the trainable parameters of the best epoch. Returns that epoch."""
    images, labels = train
    params = [p for p in model.parameters() if p.requires_grad]
    counts = torch.bincount(labels, minlength=3).double()
    weight = (counts.sum() / (3 * counts)).float()
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    starts = list(range(0, len(images), BATCH))
    if len(images) - starts[-1] == 1:
        starts.pop()
    total = len(starts) * EPOCHS
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step / total, 1.0)))
    )
    generator = torch.Generator().manual_seed(seed)
    best_auc, best_epoch, best = -math.inf, -1, [p.detach().clone() for p in params]
    for epoch in range(EPOCHS):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        for start in starts:
            batch = order[start : start + BATCH]
            loss = F.cross_entropy(model(images[batch]), labels[batch], weight=weight)
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        model.eval()
        with torch.inference_mode():
            logits = torch.cat([model(val[0][s]) for s in batches(len(val[0]), EVAL_BATCH)])
        float(F.cross_entropy(logits, val[1], weight=weight))  # the validation loss, reported
        auc = binary_auc(val[1].numpy() == positive, torch.softmax(logits.double(), 1)[:, positive])
        if auc > best_auc:
            best_auc, best_epoch = auc, epoch
            best = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, b in zip(params, best, strict=True):
            p.copy_(b)
    return best_epoch


@pytest.mark.benchmark(group="stage_training")
def test_training_vs_plain_loop(benchmark, components, data):
    config = config_for(components)
    train, val = data.splits["train"], data.splits["val"]
    memory = ((in_memory(train.images), train.labels), (in_memory(val.images), val.labels))
    initial = build_model(components, FAST_VIT, "lora")
    strategy = components.strategies.create("lora")
    settings = config.train  # the task's: lr 2e-3, no warm-up, balanced classes, select on AUC
    pos = data.task.positive_index

    def ours(model: Classifier) -> Any:
        context = FitContext(generator=torch.Generator().manual_seed(0), positive_class=pos)
        return strategy.fit(model, train, val, settings, context)

    def plain(model: Classifier) -> int:
        return plain_fit(model, *memory, settings.lr, settings.weight_decay, pos, seed=0)

    a, b = copy.deepcopy(initial), copy.deepcopy(initial)
    torch.manual_seed(0)
    report = ours(a)
    torch.manual_seed(0)
    assert plain(b) == report.best_epoch
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    benchmark.pedantic(ours, args=(copy.deepcopy(initial),), rounds=1)
    t_ours, t_plain = interleaved_medians(lambda: ours(a), lambda: plain(b), rounds=7)
    ratio = t_ours / t_plain
    n = len(train) * EPOCHS
    show(
        benchmark,
        "ratio_vs_plain_loop",
        ratio,
        f"training ({FAST_VIT} x lora, {EPOCHS} epochs of {len(train)} images + validation): "
        f"fit / plain loop on images in memory: {ratio:.3f} (target <= 1.05: "
        f"{verdict(ratio <= 1.05)}; {n / t_plain:.0f} training images/s plain)",
    )


# --- 3. saliency --------------------------------------------------------------------------------


def stage_runner(components: Components, data: RunData, **overrides: Any) -> CellRunner:
    return CellRunner(config_for(components, **overrides), components, data)


def base_record(backbone: str) -> dict[str, Any]:
    return {"backbone": backbone, "strategy": "linear_probe", "seed": 0, "random_init": True}


def captum_maps(model: Classifier, images: torch.Tensor, target: int, method: str) -> torch.Tensor:
    """captum on the same batches: ``Saliency``, or ``LayerGradCam`` upsampled like Grad-CAM."""
    from captum.attr import LayerGradCam, Saliency

    out = []
    for s in batches(len(images), EVAL_BATCH):
        x = images[s]
        targets = torch.full((len(x),), target, dtype=torch.long)
        if method == "saliency":
            attr = Saliency(model).attribute(x.clone().requires_grad_(True), target=targets)
        else:
            cam = LayerGradCam(model, model.backbone.cam_layer()).attribute(x, target=targets)
            attr = F.interpolate(
                F.relu(cam), size=x.shape[-2:], mode="bilinear", align_corners=False
            )
        out.append(attr[:, 0].detach())
    return torch.cat(out)


@pytest.mark.benchmark(group="stage_saliency")
@pytest.mark.parametrize(("method", "backbone"), [("saliency", VIT), ("gradcam", CNN)])
def test_saliency_stage_vs_captum(benchmark, components, data, method, backbone):
    model = build_model(components, backbone, "linear_probe")
    label = backbone if isinstance(backbone, str) else backbone["name"]
    runner = stage_runner(
        components,
        data,
        backbones=[backbone],
        saliency=[method],
        metrics=["auc"],
        sanity={"images": 0},
    )
    test, pos = data.splits["test"], data.task.positive_index
    images = in_memory(test.images)

    def ours() -> CellResult:
        result = CellResult(None)  # type: ignore[arg-type]
        runner._explain(model, base_record(label), result)
        return result

    def method_only() -> torch.Tensor:
        """xaibench's method on the same batches in memory (the stage less its bookkeeping)."""
        explain = runner.saliency[method].explain
        chunks = [images[s] for s in batches(len(images), EVAL_BATCH)]
        return torch.cat([explain(model, x, torch.full((len(x),), pos)) for x in chunks])

    grid = runner.config.analysis.drift_grid
    reference = captum_maps(model, images, pos, method)
    pooled = F.adaptive_avg_pool2d(reference[:, None].double(), grid)
    np.testing.assert_array_equal(ours().drift_maps[method].maps, pooled[:, 0].float().numpy())
    torch.testing.assert_close(method_only(), reference, rtol=0, atol=0)
    benchmark.pedantic(ours, rounds=1)
    t = interleaved(
        {
            "stage": ours,
            "method": method_only,
            "captum": lambda: captum_maps(model, images, pos, method),
        },
        rounds=7 if method == "saliency" else 15,
    )
    ratio, alone = t["stage"] / t["captum"], t["method"] / t["captum"]
    benchmark.extra_info["method_alone_vs_captum"] = round(alone, 3)
    show(
        benchmark,
        "ratio_vs_captum",
        ratio,
        f"saliency stage ({method}, {label}, {len(test)} test images) / captum on the same "
        f"batches in memory: {ratio:.3f} (target <= 1.05: {verdict(ratio <= 1.05)}); "
        f"xaibench's method alone on those batches: {alone:.3f}",
    )


# --- 4. perturbed predictions (Delta_region) -----------------------------------------------------


@pytest.mark.benchmark(group="stage_perturbation")
@pytest.mark.parametrize("backbone", [VIT, FAST_VIT])
def test_perturbation_stage_vs_apply_and_forward(benchmark, components, data, backbone):
    model = build_model(components, backbone, "linear_probe")
    regions = {**data.regions, "perturb_regions": ["bone", "spine"], "complement_regions": ["bone"]}
    small = dataclasses.replace(data, regions=regions)
    runner = CellRunner(
        config_for(components, backbones=[backbone], perturbations=PERTURBATIONS), components, small
    )
    val, test, pos = data.splits["val"], data.splits["test"], data.task.positive_index
    val_probs = np.exp(predict_log_probs(model, val.images, EVAL_BATCH))
    threshold = youden_threshold(val.labels.numpy() == pos, val_probs[:, pos])
    intact = predictions_from_log_probs(
        test.labels.numpy(), predict_log_probs(model, test.images, EVAL_BATCH), pos, threshold
    )
    images = in_memory(test.images)
    masks = [in_memory(test.regions[r]) for r in regions["perturb_regions"]]
    masks += [~in_memory(test.regions[r]) for r in regions["complement_regions"]]

    def ours() -> CellResult:
        result = CellResult(None)  # type: ignore[arg-type]
        runner._perturb(model, base_record(backbone), intact, result)
        return result

    def predictions_only() -> list[np.ndarray]:
        """The stage less its scoring: the runner's perturbed batches, predicted as it does."""
        variants = [(r, False) for r in regions["perturb_regions"]]
        variants += [(r, True) for r in regions["complement_regions"]]
        return [
            np.concatenate(
                [
                    predict_log_probs(model, b, EVAL_BATCH, runner.runtime)
                    for b in runner._perturbedbatch_slices(
                        name, perturbation, region, complement, 0
                    )
                ]
            )
            for name, perturbation in runner.perturbations.items()
            for region, complement in variants
        ]

    def plain() -> list[torch.Tensor]:
        out = []
        for perturbation in runner.perturbations.values():
            for mask in masks:
                generator = torch.Generator().manual_seed(0)
                probs = []
                for s in batches(len(images), EVAL_BATCH):
                    x = perturbation.apply(images[s], mask[s], generator)
                    with torch.inference_mode():
                        probs.append(torch.log_softmax(model(x).double(), dim=1))
                out.append(torch.cat(probs))
        return out

    frames = ours().predictions
    columns = [f"log_prob_{c}" for c in data.task.class_names]
    assert len(frames) == len(PERTURBATIONS) * len(masks)
    for frame, probs, alone in zip(frames, plain(), predictions_only(), strict=True):
        assert np.array_equal(frame[columns].to_numpy(), probs.numpy())
        assert np.array_equal(alone, probs.numpy())
    benchmark.pedantic(ours, rounds=1)
    t = interleaved({"stage": ours, "predictions": predictions_only, "plain": plain}, rounds=7)
    ratio, unscored = t["stage"] / t["plain"], t["predictions"] / t["plain"]
    benchmark.extra_info["ratio_without_scoring"] = round(unscored, 3)
    show(
        benchmark,
        "ratio_vs_apply_and_forward",
        ratio,
        f"Delta_region stage ({backbone}, {len(frames)} perturbation x region variants of "
        f"{len(test)} test images) / apply + one plain forward each: {ratio:.3f} "
        f"(target <= 1.10: {verdict(ratio <= 1.10)}); its perturbed predictions alone, without "
        f"the Delta scores and their bootstrap intervals: {unscored:.3f}",
    )


# --- 5. linear probe with cached features ------------------------------------------------------


@pytest.mark.benchmark(group="stage_linear_probe")
@pytest.mark.parametrize("backbone", [VIT, "timm:resnet18"])
def test_linear_probe_cached_features(benchmark, components, data, tmp_path, backbone):
    config = config_for(components)
    train, val = data.splits["train"], data.splits["val"]
    model = build_model(components, backbone, "linear_probe")
    strategy = components.strategies.create("linear_probe")
    pos = data.task.positive_index
    cache = TensorCache(tmp_path)

    def fit(cached: bool) -> torch.Tensor:
        context = FitContext(
            generator=torch.Generator().manual_seed(0),
            positive_class=pos,
            cache=cache if cached else None,
            feature_key="stage-overhead" if cached else None,
        )
        torch.manual_seed(0)  # the head's initial weights
        strategy.fit(model, train, val, config.train, context)
        return model.head.weight.detach().clone()

    assert torch.equal(fit(cached=False), fit(cached=True))  # the first cached fit stores them
    assert cache.hits == 0
    assert cache.misses == 2
    benchmark.pedantic(fit, args=(True,), rounds=3)
    rounds = 2 if backbone.startswith("timm:") else 5
    t_cached, t_extract = interleaved_medians(lambda: fit(True), lambda: fit(False), rounds)
    speedup = t_extract / t_cached
    show(
        benchmark,
        "speedup_cached_vs_extracting",
        speedup,
        f"linear_probe fit ({backbone}, {len(train)} + {len(val)} images): extracting features "
        f"{t_extract:.3f} s, cached {t_cached:.3f} s: {speedup:.1f}x faster (target >= 10x: "
        f"{verdict(speedup >= 10)})",
    )


# --- 6. batch source vs model -------------------------------------------------------------------


def eval_source(data: RunData) -> Callable[[], int]:
    """What the explanation stage reads per batch: images and every explained region's masks."""
    test = data.splits["test"]
    regions = [test.regions[r] for r in data.regions["explain_regions"]]

    def read() -> int:
        for s in batches(len(test), EVAL_BATCH):
            images = test.images[s]
            for masks in regions:
                masks[s]
        return len(images)

    return read


def train_source(data: RunData) -> Callable[[], int]:
    """What the training loop reads per epoch: shuffled batches of images and labels."""
    train = data.splits["train"]
    generator = torch.Generator().manual_seed(0)

    def read() -> int:
        order = torch.randperm(len(train), generator=generator)
        for s in range(0, len(train), BATCH):
            train.images[order[s : s + BATCH]]
            train.labels[order[s : s + BATCH]]
        return len(train)

    return read


@pytest.mark.benchmark(group="stage_batch_source")
@pytest.mark.parametrize("backbone", [*QUICK, "timm:resnet18"])
def test_batch_source_vs_model_throughput(benchmark, components, data, backbone):
    model = build_model(components, backbone, "linear_probe")
    test, train = data.splits["test"], data.splits["train"]
    images = in_memory(test.images)[:EVAL_BATCH]

    def forward() -> None:
        with torch.inference_mode():
            model(images)

    rounds = 3 if backbone.startswith("timm:") else 7
    t_eval, t_model = interleaved_medians(eval_source(data), forward, rounds=rounds)
    t_train, _ = interleaved_medians(train_source(data), eval_source(data), rounds=rounds)
    model_rate = EVAL_BATCH / t_model
    eval_rate, train_rate = len(test) / t_eval, len(train) / t_train
    benchmark.pedantic(eval_source(data), rounds=3)
    benchmark.extra_info["model_images_per_s"] = round(model_rate)
    benchmark.extra_info["train_source_images_per_s"] = round(train_rate)
    ratio = min(eval_rate, train_rate) / model_rate
    show(
        benchmark,
        "source_over_model",
        ratio,
        f"batch source vs model forward ({backbone}): test batches with "
        f"{len(data.regions['explain_regions'])} region masks {eval_rate:.0f} images/s, "
        f"training batches {train_rate:.0f} images/s, model {model_rate:.0f} images/s: "
        f"{ratio:.1f}x (target > 2x: {verdict(ratio > 2)})",
    )
