"""DumpGraph: write the autograd graph of a reported value as a Graphviz DOT file."""
from __future__ import annotations

import math
import os
import shutil
import subprocess
from typing import Any, Dict, List, Optional

import torch

from trainerlib.extension import Extension
from trainerlib.serialization import atomic_open

_VARIABLE_STYLE = {'shape': 'octagon', 'fillcolor': '#E0E0E0', 'style': 'filled'}
_FUNCTION_STYLE = {'shape': 'record', 'fillcolor': '#6495ED', 'style': 'filled'}


class _UntilDrawn:
    """Fires at every question until the graph is drawn; the trainer then stops asking."""

    def __init__(self, extension: 'DumpGraph') -> None:
        self._extension = extension

    def __call__(self, trainer: Any) -> bool:
        return not self._extension.drawn

    def next_fire(self, iteration: int) -> float:
        return math.inf if self._extension.drawn else iteration + 1


class DumpGraph(Extension):
    """Draws the autograd graph behind ``trainer.observation[root_name]`` once, at the
    first iteration (or the first after a resume, if it was not drawn yet).

    As Chainer's, it asks the reporter to keep the graph of reported tensors
    (``trainer.reporter.keep_graph``) from ``initialize`` until it has drawn it. Nodes
    are autograd functions (``AddmmBackward0`` …), the parameters (named as in the
    models: ``main/predictor/l1/weight``) and the root, with their shapes. If Graphviz's
    ``dot`` is on the PATH, a PNG is rendered next to the DOT file.

    Args:
        root_name: observation key of the root, e.g. ``'main/loss'``.
        filename: output file in ``trainer.out``, default ``'cg.dot'``.
        variable_style, function_style: DOT attributes of tensor and function nodes.
    """

    default_name = 'dump_graph'

    def __init__(self, root_name: str, filename: str = 'cg.dot',
                 variable_style: Optional[Dict[str, str]] = None,
                 function_style: Optional[Dict[str, str]] = None) -> None:
        self._root_name = root_name
        self._filename = filename
        self._variable_style = dict(_VARIABLE_STYLE if variable_style is None else variable_style)
        self._function_style = dict(_FUNCTION_STYLE if function_style is None else function_style)
        self.drawn = False
        self.trigger = _UntilDrawn(self)
        self._restore: Optional[bool] = None

    def initialize(self, trainer: Any) -> None:
        if not self.drawn and self._restore is None:
            self._restore = trainer.reporter.keep_graph
            trainer.reporter.keep_graph = True

    def __call__(self, trainer: Any) -> None:
        if self.drawn:
            return
        try:
            root = trainer.observation.get(self._root_name)
            if not isinstance(root, torch.Tensor) or root.grad_fn is None:
                raise TypeError(f'DumpGraph: {self._root_name!r} is not a tensor with an autograd '
                                f'graph in the observation (reported keys: '
                                f'{sorted(trainer.observation)}); report it from the forward '
                                'pass, before detaching it')
            path = os.path.join(trainer.out, self._filename)
            with atomic_open(path, 'w') as f:
                f.write(self._dot(root, _parameter_names(trainer)))
            if shutil.which('dot'):
                subprocess.run(['dot', '-Tpng', path, '-o', os.path.splitext(path)[0] + '.png'],
                               check=True, capture_output=True)
            self.drawn = True
        finally:
            self._stop_keeping(trainer)

    def finalize(self, trainer: Any = None) -> None:
        if trainer is not None:
            self._stop_keeping(trainer)

    def _stop_keeping(self, trainer: Any) -> None:
        if self._restore is not None:
            trainer.reporter.keep_graph, self._restore = self._restore, None

    def _dot(self, root: torch.Tensor, names: Dict[int, str]) -> str:
        """The DOT text: tensors and functions as nodes, edges in the forward direction."""
        lines: List[str] = ['digraph graphname{rankdir=TB;']
        ids: Dict[int, str] = {}

        def node(obj: Any, label: str, style: Dict[str, str]) -> str:
            key = id(obj)
            if key not in ids:
                ids[key] = f'n{len(ids)}'
                attrs = ','.join(f'{k}="{v}"' for k, v in {**style, 'label': label}.items())
                lines.append(f'{ids[key]} [{attrs}];')
            return ids[key]

        def tensor_label(t: torch.Tensor, name: str) -> str:
            return f'{name}: {tuple(t.shape)} {str(t.dtype).replace("torch.", "")}'

        root_id = node(root, tensor_label(root, self._root_name), self._variable_style)
        todo, seen = [(root.grad_fn, root_id)], set()
        while todo:
            fn, consumer = todo.pop()
            if hasattr(fn, 'variable'):   # AccumulateGrad: a leaf tensor (a parameter)
                leaf = fn.variable
                source = node(leaf, tensor_label(leaf, names.get(id(leaf), 'leaf')),
                              self._variable_style)
            else:
                source = node(fn, type(fn).__name__, self._function_style)
            lines.append(f'{source} -> {consumer};')
            if id(fn) in seen:
                continue
            seen.add(id(fn))
            todo.extend((nxt, source) for nxt, _ in getattr(fn, 'next_functions', ())
                        if nxt is not None)
        return '\n'.join(lines) + '\n}\n'

    def state_dict(self) -> dict:
        return {'drawn': self.drawn}

    def load_state_dict(self, state: dict) -> None:
        self.drawn = bool(state['drawn'])


def _parameter_names(trainer: Any) -> Dict[int, str]:
    """``id(parameter) -> 'main/predictor/l1/weight'`` over the updater's models."""
    names: Dict[int, str] = {}
    for model_name, model in trainer.updater.get_all_models().items():
        for name, param in model.named_parameters():
            names.setdefault(id(param), f"{model_name}/{name.replace('.', '/')}")
    return names
