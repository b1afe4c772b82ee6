"""Hook specifications: the whole plugin contract of xaibench, in one place.

Every hook below except :func:`register_commands` is a *registration* hook: xaibench calls it once
per plugin with a ``register`` callable bound to that plugin (so each component records which
distribution provided it), and the plugin calls ``register(name, target, summary=..., options=...)``
once per component. ``target`` is a class or, better, a lazy ``"module:Class"`` string.

Plugins implement hooks with :data:`hookimpl` and are found through the entry-point group
``xaibench``. The docs (``docs/plugins/hooks.md``) have one section per hook whose heading is
the exact signature; a test keeps the two in step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from xaibench.registry import Register

hookspec = pluggy.HookspecMarker("xaibench")
hookimpl = pluggy.HookimplMarker("xaibench")


# --- Models and how they are adapted -------------------------------------------------------------


@hookspec
def register_backbones(register: Register) -> None:
    """Register backbone factories (subclasses of ``xaibench.models.base.BackboneFactory``).

    Called once per plugin when the registries are built. Names follow timm's ``arch.weights_tag``
    (``test_vit.random``). A factory's ``build()`` returns a ``BackboneAdapter`` that owns
    preprocessing, pooled features and the token grid used by CAM-style saliency. Since 0.1.
    """


@hookspec
def register_strategies(register: Register) -> None:
    """Register adaptation strategies (subclasses of ``xaibench.strategies.base.Strategy``).

    A strategy decides which parameters train and fits a classifier head on a backbone
    (``linear_probe``, ``full``). Since 0.1.
    """


# --- Explanations -------------------------------------------------------------------------------


@hookspec
def register_saliency_methods(register: Register) -> None:
    """Register saliency methods (subclasses of ``xaibench.saliency.base.SaliencyMethod``).

    A method maps ``(model, images [B,1,H,W], targets [B])`` to maps ``[B,H,W]`` in the raw image
    grid, batched, and must leave no hooks on the model, even when it raises. Since 0.1.
    """


@hookspec
def register_perturbations(register: Register) -> None:
    """Register region perturbations (subclasses of ``xaibench.perturbations.base.Perturbation``).

    A perturbation changes the pixels inside a region mask, in raw-intensity space, so it means
    the same for every backbone (``zero``, ``mean``). Since 0.1.
    """


# --- Scores, tasks and data ----------------------------------------------------------------------


@hookspec
def register_metrics(register: Register) -> None:
    """Register metrics (subclasses of ``xaibench.metrics.base.Metric``).

    A metric declares whether higher is better and which inputs it needs (predictions, saliency
    maps with region masks, or perturbed predictions; the model's score for faithfulness; the
    maps alone for a ``MapMetric``; the model and saliency method for an ``ExplainerMetric``),
    and returns per-sample values where they exist plus an aggregate. Since 0.1.
    """


@hookspec
def register_tasks(register: Register) -> None:
    """Register tasks (subclasses of ``xaibench.tasks.base.Task``).

    A task names its dataset, label rule, classes, regions of interest and default grid
    (``osteoporosis``). Since 0.1. A task file (YAML, docs/tasks/writing-tasks.md) is registered
    with ``xaibench.tasks.file_task:FileTask`` and ``options={"file": "package:task.yaml"}``.
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Register dataset sources (subclasses of ``xaibench.data.base.Dataset``).

    A dataset yields samples (raw image in [0, 1], region masks, patient id, attributes) and a
    cheap per-sample table for labels and splits (``phantom``). Since 0.1.
    """


@hookspec
def register_importers(register: Register) -> None:
    """Register importers (subclasses of ``xaibench.data.importers.base.Importer``).

    An importer reads a public collection's published layout (label files, annotations) under a
    folder and returns manifest rows, for ``xaibench data import SOURCE ROOT --out DIR``
    (``nih``, ``siim``). Since 0.1.
    """


@hookspec
def register_segmenters(register: Register) -> None:
    """Register segmenters (subclasses of ``xaibench.segmenters.base.Segmenter``).

    A segmenter maps a batch of raw radiographs to named boolean masks on the image grid, for
    ``xaibench data masks MANIFEST --segmenter NAME`` (``torchxrayvision_pspnet``). Since 0.1.
    """


# --- Running --------------------------------------------------------------------------------------


@hookspec
def register_executors(register: Register) -> None:
    """Register executors (subclasses of ``xaibench.executors.base.Executor``).

    An executor runs a picklable job on a list of independent cells and returns their results
    in order, calling ``job.done`` on each as it arrives (``local``; ``ray`` in the
    ``xaibench-ray`` package). Since 0.1.
    """


@hookspec
def register_observers(register: Register) -> None:
    """Register run observers (subclasses of ``xaibench.observers.base.Observer``).

    An observer is told when a run starts, as each cell is checkpointed (with its records and
    files) and when the run ends, e.g. to log it to an experiment tracker (``mlflow`` in the
    ``xaibench-mlflow`` package). Selected per run (``--observer NAME``). Since 0.1.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``xaibench`` command-line interface.

    Called once when the CLI starts, with the root :class:`click.Group`; add commands with
    ``@cli.command()``. Since 0.1.
    """
