"""CLIPasso's loss (docs/methods/sketch.md): RN101 `layer2` + `layer3` MSE plus 0.1 x (1 - cosine) of its
attention-pool output, over the un-augmented pair and jointly augmented pairs.

`ClipassoLoss` holds one target's features and, on CUDA, replays the step's
ResNet passes as CUDA graphs; `render_sketch` draws strokes as the loss sees them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from clip.model import ModifiedResNet

from clipcli import ui
from clipcli.errors import first_line
from clipcli.models.normalize import clip_normalize, clip_stats
from clipcli.pipelines.sketch_augment import augment, concatenate, random_augmentations
from clipcli.render.strokes import rasterize

CANVAS = 224
FC_WEIGHT = 0.1  # clip_fc_loss_weight


def resnet_features(
    visual: ModifiedResNet, images: torch.Tensor, groups: Sequence[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(`layer2`, `layer3`, attention-pool output) of a CLIP ResNet for normalised `images`.

    The stages are called by name: CLIPasso picks them by child index, which
    points at the wrong modules in today's `clip` (docs/methods/sketch.md).
    `groups` (sizes of consecutive runs of images) pools each run apart: the
    pool's matrix products round by batch size, its convolutions do not, so
    each image's features are those of a batch of its own views alone.
    """
    x = images.type(visual.conv1.weight.dtype)
    for stem in (1, 2, 3):
        x = getattr(visual, f"relu{stem}")(getattr(visual, f"bn{stem}")(getattr(visual, f"conv{stem}")(x)))
    layer2 = visual.layer2(visual.layer1(visual.avgpool(x)))
    layer3 = visual.layer3(layer2)
    top = visual.layer4(layer3)
    parts = top.split(list(groups)) if groups is not None else [top]
    pooled = torch.cat([visual.attnpool(part) for part in parts]) if len(parts) > 1 else visual.attnpool(top)
    return layer2, layer3, pooled


@contextlib.contextmanager
def _frozen(module: torch.nn.Module):
    """No weight gradients while the graph is built: we differentiate w.r.t. the image only."""
    flags = [(parameter, parameter.requires_grad) for parameter in module.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


@dataclass(frozen=True)
class Target:
    """One target image `[1, 3, H, W]` on the model's device and its un-augmented stage outputs."""

    image: torch.Tensor
    features: tuple[torch.Tensor, ...]


class ClipassoLoss:
    """CLIPasso's loss against one target (`__call__`) or several images' own targets at once (`losses`).

    A target's un-augmented features are computed once (`prepare`).
    On CUDA the training step's two fixed-shape ResNet passes (augmented
    targets forward; sketch views forward and backward) are captured once as
    CUDA graphs and replayed: eager RN101 is bound by kernel launches (a step
    took 42 ms eager and 17 ms replayed on an H100). `cuda_graphs=False` keeps
    them eager; the arithmetic is the same either way. Where a capture fails,
    one notice says so and the run goes on eagerly. Only the latest shape of
    each pass is kept: a batch of images that shrinks recaptures instead of
    holding every size's memory pool.
    """

    def __init__(self, model, target: torch.Tensor | None = None, cuda_graphs: bool = True):
        if not isinstance(model.visual, ModifiedResNet):
            raise ValueError("the CLIPasso loss needs a CLIP ResNet (RN101 in CLIPasso)")
        self.visual = model.visual
        weight = self.visual.conv1.weight
        self.cuda_graphs = cuda_graphs and weight.is_cuda
        self._stats = clip_stats(torch.float32, weight.device)
        self._graphed: dict[tuple, Callable] = {}
        if target is not None:
            self._own = self.prepare(target)
            self.target, self.target_features = self._own.image, self._own.features

    def prepare(self, target: torch.Tensor) -> Target:
        """`target` `[1, 3, H, W]` in [0, 1] with its features, ready for `losses`."""
        if target.ndim != 4 or target.shape[0] != 1 or target.shape[1] != 3:
            raise ValueError(f"target must be [1, 3, H, W], got {tuple(target.shape)}")
        image = target.to(self.visual.conv1.weight.device, torch.float32)
        with torch.no_grad():
            return Target(image, self.features(image))

    def features(self, images: torch.Tensor, groups: Sequence[int] | None = None) -> tuple[torch.Tensor, ...]:
        """Stage outputs for `[n, 3, H, W]` images in [0, 1], in the model's dtype (`groups`: `resnet_features`)."""
        with _frozen(self.visual):
            pixels = clip_normalize(images, self._stats)
            return resnet_features(self.visual, pixels.to(self.visual.conv1.weight.dtype), groups)

    def __call__(
        self, sketch: torch.Tensor, augmentations: int = 4, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss `[B]` over 1 + `augmentations` pairs, un-augmented loss `[B]` detached).

        Augmented pair j of sketch b is `augment(sketch[b])` vs `augment(target)`
        with the same parameters.
        """
        (total,), (first,) = self.losses([sketch], [self._own], augmentations, [generator])
        return total, first

    def losses(
        self,
        sketches: Sequence[torch.Tensor],
        targets: Sequence[Target],
        augmentations: int,
        generators: Sequence[torch.Generator | None],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """`__call__` for several images in one pass: image i's sketches `[B_i, 3, H, W]` against `targets[i]`.

        Image i's augmentations are drawn from `generators[i]` exactly as a
        call for it alone would draw them, so its losses are those of that call.
        """
        counts = [sketch.shape[0] for sketch in sketches]
        sketch = torch.cat(list(sketches)).to(self.visual.conv1.weight.device, torch.float32)
        if augmentations == 0:
            per_view = self._view_losses(
                sketch, *(_repeated([t.features[k] for t in targets], counts) for k in range(3))
            )
            firsts = list(per_view.split(counts))
            return firsts, [first.detach() for first in firsts]
        size, drawn = sketch.shape[-1], [n * augmentations for n in counts]
        params = concatenate([random_augmentations(n, size, g) for n, g in zip(drawn, generators, strict=True)])
        images = _repeated([target.image for target in targets], drawn)
        stacked = torch.cat([sketch.repeat_interleave(augmentations, 0), images], 1)
        warped = augment(stacked, params)  # one warp for both halves: identical parameters
        with torch.no_grad():
            augmented = self._replay("target", partial(self.features, groups=drawn), warped[:, 3:].contiguous())
        # Image by image, its plain views then its augmented ones: the batch a lone image makes.
        views = _interleaved([sketch, warped[:, :3]], [counts, drawn])
        theirs = [
            _interleaved([_repeated([t.features[k] for t in targets], counts), augmented[k]], [counts, drawn])
            for k in range(3)
        ]
        groups = [n + m for n, m in zip(counts, drawn, strict=True)]
        per_view = self._replay("views", partial(self._view_losses, groups=groups), views, *theirs)
        totals, firsts = [], []
        for n, image_views in zip(counts, per_view.split(groups), strict=True):
            first = image_views[:n]
            totals.append((first + image_views[n:].view(n, augmentations).sum(1)) / (1 + augmentations))
            firsts.append(first.detach())
        return totals, firsts

    def _view_losses(self, views: torch.Tensor, *theirs: torch.Tensor, groups: Sequence[int] | None = None):
        return pair_losses(self.features(views, groups), theirs)

    def _replay(self, name: str, fn: Callable, *args: torch.Tensor):
        """`fn(*args)`, through CUDA graphs captured for these shapes on first use when `cuda_graphs` is on.

        The graphs' outputs are reused buffers: valid until the next call.
        """
        if not self.cuda_graphs:
            return fn(*args)
        groups = tuple(fn.keywords.get("groups") or ()) if isinstance(fn, partial) else ()
        key = (name, torch.is_grad_enabled(), groups, *(tuple(arg.shape) for arg in args))
        if key not in self._graphed:
            self._graphed = {kept: graph for kept, graph in self._graphed.items() if kept[:2] != key[:2]}
            samples = tuple(arg.detach().clone().requires_grad_(arg.requires_grad) for arg in args)
            try:
                self._graphed[key] = torch.cuda.make_graphed_callables(fn, samples)
            except (RuntimeError, AssertionError) as error:  # capture refused; the warm-ups changed no state
                self.cuda_graphs = False
                ui.notice(f"CUDA graphs unavailable here, running eagerly: {first_line(error)}")
                return fn(*args)
        return self._graphed[key](*args)


def _interleaved(tensors: Sequence[torch.Tensor], sizes: Sequence[Sequence[int]]) -> torch.Tensor:
    """Image by image, its rows of each tensor in turn (`sizes[j][i]`: image i's rows in `tensors[j]`)."""
    pieces = [tensor.split(list(counts)) for tensor, counts in zip(tensors, sizes, strict=True)]
    return torch.cat([piece for image in zip(*pieces, strict=True) for piece in image])


def _repeated(tensors: Sequence[torch.Tensor], counts: Sequence[int]) -> torch.Tensor:
    """Each `[1, ...]` tensor repeated its count of times along the batch, in order."""
    expanded = [tensor.expand(count, *tensor.shape[1:]) for tensor, count in zip(tensors, counts, strict=True)]
    return expanded[0] if len(expanded) == 1 else torch.cat(expanded)


def pair_losses(ours: Sequence[torch.Tensor], theirs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per pair: MSE of `layer2` + MSE of `layer3` + 0.1 x (1 - cosine) of the pooled embeddings, in fp32."""
    geometric = sum(
        (x.float() - y.float()).square().mean(dim=(1, 2, 3)) for x, y in zip(ours[:2], theirs[:2], strict=True)
    )
    semantic = 1 - F.cosine_similarity(ours[2].float(), theirs[2].float(), dim=1)
    return geometric + FC_WEIGHT * semantic


def sketch_loss(
    sketch: torch.Tensor,
    target: torch.Tensor,
    model,
    augmentations: int = 4,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """CLIPasso's loss per sketch, `[B]`.

    `sketch` `[B, 3, 224, 224]` and `target` `[1, 3, 224, 224]` in [0, 1], un-normalised;
    `model` a CLIP ResNet. The mean over the un-augmented pair and `augmentations`
    augmented pairs (drawn from `generator`) of `layer2` MSE + `layer3` MSE +
    0.1 x (1 - cosine) of the attention-pool outputs. `augmentations=0` is the
    evaluation loss.
    """
    total, _ = ClipassoLoss(model, target)(sketch, augmentations, generator)
    return total


def render_sketch(points: torch.Tensor, width: float = 1.5, size: int = CANVAS) -> torch.Tensor:
    """`[B, 3, size, size]` black strokes on white, as the loss sees them."""
    return (1.0 - rasterize(points, width, size))[:, None].expand(-1, 3, -1, -1)
