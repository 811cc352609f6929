"""Pictures of the explain recipe: mask, heat map, perturbed image, overlay (PNG grids)."""
from __future__ import annotations

import os

import torch


def heatmap(deleted: torch.Tensor) -> torch.Tensor:
    """``(N, 1, H, W)`` values in [0, 1] -> ``(N, 3, H, W)`` RGB in matplotlib's jet map."""
    from matplotlib import colormaps
    rgb = colormaps['jet'](deleted[:, 0].clamp(0, 1).cpu().numpy())[..., :3]
    return torch.from_numpy(rgb).permute(0, 3, 1, 2).float()


def to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Images ``(N, C, H, W)`` scaled to [0, 1] per image, as 3 channels."""
    x = x.detach().float().cpu()
    low = x.flatten(1).min(1).values.reshape(-1, 1, 1, 1)
    high = x.flatten(1).max(1).values.reshape(-1, 1, 1, 1)
    x = (x - low) / (high - low).clamp_min(1e-12)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, :3]


def save_pictures(out: str, x: torch.Tensor, mask: torch.Tensor, perturbed: torch.Tensor,
                  before: torch.Tensor, after: torch.Tensor, columns: int = 8) -> None:
    """Write ``mask.png`` (white = kept), ``heatmap.png`` (1 - mask, jet), ``perturbed.png``,
    ``overlay.png`` (image under the heat map) and ``explanations.png`` (first ``columns``
    images: rows image / heat map / perturbed / overlay, probabilities in the titles)."""
    from torchvision.utils import save_image
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    mask = mask.detach().float().cpu()
    image, heat = to_rgb(x), heatmap(1 - mask)
    overlay = 0.5 * image + 0.5 * heat
    pictures = {'mask': mask, 'heatmap': heat, 'perturbed': to_rgb(perturbed),
                'overlay': overlay}
    for name, batch in pictures.items():
        save_image(batch, os.path.join(out, f'{name}.png'), nrow=columns, padding=2,
                   pad_value=0.5)

    n = min(columns, x.shape[0])
    rows = [('image', image), ('deleted (1 - m)', heat), ('perturbed', pictures['perturbed']),
            ('overlay', overlay)]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.6 * n, 1.7 * len(rows)), squeeze=False)
    for r, (label, batch) in enumerate(rows):
        for k in range(n):
            ax = axes[r][k]
            ax.imshow(batch[k].permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f'p={float(before[k]):.2f}', fontsize=8)
            if r == 2:
                ax.set_title(f'p={float(after[k]):.2f}', fontsize=8)
            if k == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, 'explanations.png'), dpi=80)
    plt.close(fig)
