"""CLIPasso's loss (docs/methods/sketch.md): RN101 `layer2` + `layer3` MSE plus 0.1 x (1 - cosine) of its
attention-pool output, over the un-augmented pair and jointly augmented pairs.

`ClipassoLoss` holds one target's features and, on CUDA, replays the step's
ResNet passes as CUDA graphs; `render_sketch` draws strokes as the loss sees them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from clip.model import ModifiedResNet

from clipcli import ui
from clipcli.errors import first_line
from clipcli.models.normalize import clip_normalize, clip_stats
from clipcli.pipelines.sketch_augment import augment, random_augmentations
from clipcli.render.strokes import rasterize

CANVAS = 224
FC_WEIGHT = 0.1  # clip_fc_loss_weight


def resnet_features(visual: ModifiedResNet, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(`layer2`, `layer3`, attention-pool output) of a CLIP ResNet for normalised `images`.

    The stages are taken by name with hooks: CLIPasso picks them by child index,
    which points at the wrong modules in today's `clip` (docs/methods/sketch.md).
    """
    kept: dict[str, torch.Tensor] = {}
    handles = [
        getattr(visual, name).register_forward_hook(lambda module, args, output, name=name: kept.update({name: output}))
        for name in ("layer2", "layer3")
    ]
    try:
        pooled = visual(images)
    finally:
        for handle in handles:
            handle.remove()
    return kept["layer2"], kept["layer3"], pooled


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


class ClipassoLoss:
    """CLIPasso's loss against one target; the target's un-augmented features are computed once.

    On CUDA the training step's two fixed-shape ResNet passes (augmented
    targets forward; sketch views forward and backward) are captured once as
    CUDA graphs and replayed: eager RN101 is bound by kernel launches (a step
    took 42 ms eager and 17 ms replayed on an H100). `cuda_graphs=False` keeps
    them eager; the arithmetic is the same either way. Where a capture fails,
    one notice says so and the run goes on eagerly.
    """

    def __init__(self, model, target: torch.Tensor, cuda_graphs: bool = True):
        if not isinstance(model.visual, ModifiedResNet):
            raise ValueError("the CLIPasso loss needs a CLIP ResNet (RN101 in CLIPasso)")
        if target.ndim != 4 or target.shape[0] != 1 or target.shape[1] != 3:
            raise ValueError(f"target must be [1, 3, H, W], got {tuple(target.shape)}")
        self.visual = model.visual
        weight = self.visual.conv1.weight
        self.target = target.to(weight.device, torch.float32)
        self.cuda_graphs = cuda_graphs and weight.is_cuda
        self._stats = clip_stats(torch.float32, weight.device)
        self._graphed: dict[tuple, Callable] = {}
        with torch.no_grad():
            self.target_features = self.features(self.target)

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Stage outputs for `[n, 3, H, W]` images in [0, 1], in the model's dtype."""
        with _frozen(self.visual):
            pixels = clip_normalize(images, self._stats)
            return resnet_features(self.visual, pixels.to(self.visual.conv1.weight.dtype))

    def __call__(
        self, sketch: torch.Tensor, augmentations: int = 4, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss `[B]` over 1 + `augmentations` pairs, un-augmented loss `[B]` detached).

        Augmented pair j of sketch b is `augment(sketch[b])` vs `augment(target)`
        with the same parameters.
        """
        batch = sketch.shape[0]
        sketch = sketch.to(self.target.device, torch.float32)
        plain = [t.expand(batch, *t.shape[1:]) for t in self.target_features]
        views, theirs = sketch, plain
        if augmentations > 0:
            count = batch * augmentations
            params = random_augmentations(count, sketch.shape[-1], generator)
            stacked = torch.cat([sketch.repeat_interleave(augmentations, 0), self.target.expand(count, -1, -1, -1)], 1)
            warped = augment(stacked, params)  # one warp for both halves: identical parameters
            with torch.no_grad():
                augmented = self._replay("target", self.features, warped[:, 3:].contiguous())
            views = torch.cat([sketch, warped[:, :3]])
            theirs = [torch.cat(pair) for pair in zip(plain, augmented, strict=True)]
            per_view = self._replay("views", self._view_losses, views, *theirs)
        else:
            per_view = self._view_losses(views, *theirs)
        first = per_view[:batch]
        total = (first + per_view[batch:].view(batch, augmentations).sum(1)) / (1 + augmentations)
        return total, first.detach()

    def _view_losses(self, views: torch.Tensor, *theirs: torch.Tensor) -> torch.Tensor:
        return pair_losses(self.features(views), theirs)

    def _replay(self, name: str, fn: Callable, *args: torch.Tensor):
        """`fn(*args)`, through CUDA graphs captured for these shapes on first use when `cuda_graphs` is on.

        The graphs' outputs are reused buffers: valid until the next call.
        """
        if not self.cuda_graphs:
            return fn(*args)
        key = (name, torch.is_grad_enabled(), *(tuple(arg.shape) for arg in args))
        if key not in self._graphed:
            samples = tuple(arg.detach().clone().requires_grad_(arg.requires_grad) for arg in args)
            try:
                self._graphed[key] = torch.cuda.make_graphed_callables(fn, samples)
            except (RuntimeError, AssertionError) as error:  # capture refused; the warm-ups changed no state
                self.cuda_graphs = False
                ui.notice(f"CUDA graphs unavailable here, running eagerly: {first_line(error)}")
                return fn(*args)
        return self._graphed[key](*args)


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
