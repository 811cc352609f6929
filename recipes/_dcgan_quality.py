"""Quality of generated images judged by a locally trained classifier (ALGORITHMS.md §3.3).

Inception-based IS/FID need downloaded weights; here the judge is a classifier trained on the
same data (``recipes.classify``). For a batch of images it gives:

* ``mean_max_prob``: the mean over images of the classifier's top softmax probability;
* ``classes_covered``: how many of the data's classes are the argmax of at least one image
  (``class_histogram``: images per class; ``class_entropy``: its entropy in nats);
* ``classifier_score``: ``exp(E_x KL(p(y|x) || p(y)))`` (Inception-score formula, at most the
  number of classes);
* ``frechet_distance``: ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` between the
  classifier's penultimate features (the input of its last ``nn.Linear``) of the images and of
  real test images (FID's formula, in float64).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from trainerlib import reporter
from trainerlib.extension import PRIORITY_WRITER, make_extension


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``a`` and ``b`` (float64)."""
    a, b = a.double(), b.double()
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    sqrt_trace = torch.linalg.eigvals(ca @ cb).sqrt().real.sum()   # Tr((ca cb)^(1/2))
    value = (a.mean(0) - b.mean(0)).square().sum() + ca.trace() + cb.trace() - 2 * sqrt_trace
    return max(float(value), 0.0)


class Judge:
    """Scores images with a trained classifier against real reference images.

    Args:
        predictor: the classifier (returns logits); put in eval mode, never trained here.
        reference: real test images ``(N, C, H, W)`` at the classifier's input size.
        classes: the labels that occur in the data ("all classes" means these).
        input_size: ``(H, W)`` the classifier expects; other images are resized (bilinear,
            antialiased) first.
        batch_size: images per forward pass, default 500.
    """

    def __init__(self, predictor: nn.Module, reference: torch.Tensor, classes: Sequence[int],
                 input_size: Tuple[int, int], batch_size: int = 500) -> None:
        self.predictor = predictor.eval()
        linears = [m for m in predictor.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError('the quality classifier needs a final nn.Linear layer '
                             '(its input are the features of the Fréchet distance)')
        self._last = linears[-1]
        self.classes = sorted(int(c) for c in classes)
        self.input_size = tuple(input_size)
        self.batch_size = batch_size
        self.device = next(predictor.parameters()).device
        _, self.reference_features = self.outputs(reference)

    @torch.no_grad()
    def outputs(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(probabilities, penultimate features)`` of ``images``, on the CPU."""
        captured = []
        hook = self._last.register_forward_hook(lambda m, inputs, out: captured.append(inputs[0]))
        probs = []
        try:
            for chunk in images.split(self.batch_size):
                chunk = chunk.to(self.device, torch.float32)
                if tuple(chunk.shape[-2:]) != self.input_size:
                    chunk = F.interpolate(chunk, size=self.input_size, mode='bilinear',
                                          align_corners=False, antialias=True)
                probs.append(F.softmax(self.predictor(chunk).float(), dim=1).cpu())
        finally:
            hook.remove()
        return torch.cat(probs), torch.cat([c.flatten(1).float().cpu() for c in captured])

    def metrics(self, images: torch.Tensor) -> Dict[str, Any]:
        """The quality metrics of ``images`` (floats and ints, JSON-ready)."""
        p, features = self.outputs(images)
        marginal = p.mean(0, keepdim=True)
        kl = (p * (p.clamp_min(1e-12).log() - marginal.clamp_min(1e-12).log())).sum(1)
        counts = torch.bincount(p.argmax(1), minlength=p.shape[1])
        hist = {str(c): int(counts[c]) for c in self.classes}
        freq = torch.tensor([hist[str(c)] for c in self.classes], dtype=torch.float64)
        freq = freq[freq > 0] / len(images)
        return {
            'n_images': len(images),
            'mean_max_prob': float(p.max(1).values.mean()),
            'classes_covered': sum(v > 0 for v in hist.values()),
            'n_classes': len(self.classes),
            'class_entropy': float(-(freq * freq.log()).sum()),
            'classifier_score': float(kl.mean().exp()),
            'frechet_distance': frechet_distance(features, self.reference_features),
            'class_histogram': hist,
        }


def quality_report(judge: Judge, sample: Callable[[], torch.Tensor], prefix: str = 'quality',
                   trigger: Any = (1, 'epoch')):
    """An extension reporting ``<prefix>/{mean_max_prob, classes_covered, classifier_score,
    frechet_distance}`` of ``sample()`` (runs before LogReport, so each log entry has them)."""
    @make_extension(trigger=trigger, priority=PRIORITY_WRITER, default_name='quality_report')
    def _report(trainer) -> None:
        m = judge.metrics(sample())
        reporter.report({f'{prefix}/{k}': float(m[k]) for k in
                         ('mean_max_prob', 'classes_covered', 'classifier_score',
                          'frechet_distance')})
    return _report
