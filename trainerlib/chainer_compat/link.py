"""``chainer.Link``, ``Chain`` and ``ChainList``: ``nn.Module`` with Chainer's methods."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


class Link(torch.nn.Module):
    """An ``nn.Module`` with the Chainer methods ported scripts call.

    ``init_scope()`` is a no-op context (``nn.Module`` registers what is assigned);
    ``to_device``/``to_cpu``/``to_gpu`` move it in place; ``cleargrads()`` drops the
    gradients; ``namedparams()`` yields ``('/l1/weight', param)`` as Chainer's paths.
    """

    @contextlib.contextmanager
    def init_scope(self) -> Iterator[None]:
        yield

    def to_device(self, device) -> 'Link':
        return self.to(device)

    def to_cpu(self) -> 'Link':
        return self.to('cpu')

    def to_gpu(self, device: int = 0) -> 'Link':
        return self.to(f'cuda:{device}')

    def cleargrads(self) -> None:
        self.zero_grad(set_to_none=True)

    def namedparams(self):
        for name, param in self.named_parameters():
            yield '/' + name.replace('.', '/'), param


class Chain(Link):
    """Chainer's ``Chain``: child links are attributes (assigned in ``init_scope``)."""


class ChainList(Link):
    """Chainer's ``ChainList``: child links in order, indexable."""

    def __init__(self, *links: torch.nn.Module) -> None:
        super().__init__()
        self._children = torch.nn.ModuleList(links)

    def add_link(self, link: torch.nn.Module) -> None:
        self._children.append(link)

    def __getitem__(self, index: int) -> torch.nn.Module:
        return self._children[index]

    def __iter__(self):
        return iter(self._children)

    def __len__(self) -> int:
        return len(self._children)
