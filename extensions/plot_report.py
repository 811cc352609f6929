"""PlotReport: plot the means of reported values against the iteration or epoch."""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from trainerlib import triggers
from trainerlib._state import guess_previous, load_into, state_of
from trainerlib.distributed.context import comm_of
from trainerlib.extension import PRIORITY_READER, Extension, TriggerLike
from trainerlib.serialization import atomic_open
from trainerlib.summary import DictSummary
from trainerlib.summary_reduce import reshard_summary_state

_COUNTERS = ('epoch', 'iteration')


def require_matplotlib(what: str) -> None:
    """Raise a clear ImportError if matplotlib (the ``plot`` extra) is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError(f'{what} needs matplotlib: pip install trainerlib[plot]') from None


def new_figure(figsize: Optional[Tuple[float, float]] = None) -> Any:
    """A matplotlib ``Figure`` drawn by the headless Agg canvas (global backend untouched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=figsize)
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Any, path: str, **savefig_kwargs: Any) -> None:
    """Render ``figure`` to ``path`` as PNG atomically: readers never see a partial file."""
    with atomic_open(path, 'wb', durable=False) as f:
        figure.savefig(f, format='png', **savefig_kwargs)


class PlotReport(Extension):
    """Plots the means of ``y_keys`` over each period to ``out/<filename>``, as Chainer's.

    Every iteration the observation is added to a summary (lazily: no sync);
    when ``trigger`` fires, the mean of each of ``y_keys`` is appended at the
    current ``x_key`` and the whole figure is redrawn and written atomically.
    The points equal the values a :class:`LogReport` with the same trigger
    writes. They and the partial summary are saved in snapshots, so a resumed
    run continues the curves. Needs matplotlib (``[plot]`` extra);
    it draws with the Agg canvas and never touches the pyplot backend.

    Data-parallel (``trainer.comm`` of several ranks): it runs on every rank
    (``collective = True``): each rank accumulates its own observations, and when
    ``trigger`` fires the sums of all ranks are added in one packed all-reduce, so
    the points are the global means and the same on every rank (and in every rank's
    snapshot); only rank 0 draws and writes the file (and calls ``postprocess``).

    Args:
        y_keys: a reported key or keys to plot, e.g. ``['main/loss', 'validation/main/loss']``.
        x_key: ``'iteration'`` (default), ``'epoch'``, or any reported key (its
            mean; a period in which it was not reported adds no point).
        trigger: when to add points and redraw, default ``(1, 'epoch')``.
        postprocess: ``fn(figure, axes, summary)`` called before saving (Chainer's
            signature; ``summary`` is the :class:`DictSummary` of the period).
        filename: PNG file name in ``trainer.out``, default ``'plot.png'``.
        marker: matplotlib marker, default ``'x'`` (None: lines only).
        grid: draw the grid, default True.
        file_name: Chainer's alias of ``filename``.
    """

    trigger = (1, 'iteration')
    priority = PRIORITY_READER
    rank0_only = True   # it draws on rank 0 only ...
    collective = True   # ... but runs on every rank: its summary is reduced at its trigger

    def __init__(self, y_keys: Union[str, Iterable[str]], x_key: str = 'iteration',
                 trigger: TriggerLike = (1, 'epoch'),
                 postprocess: Optional[Callable[[Any, Any, DictSummary], None]] = None,
                 filename: str = 'plot.png', marker: Optional[str] = 'x',
                 grid: bool = True, *, file_name: Optional[str] = None) -> None:
        require_matplotlib('PlotReport')
        if file_name is not None:   # Chainer's spelling of filename
            if filename != 'plot.png':
                raise ValueError('PlotReport: give filename= or its alias file_name=, not both')
            filename = file_name
        self._y_keys = [y_keys] if isinstance(y_keys, str) else list(y_keys)
        if not self._y_keys:
            raise ValueError("PlotReport needs at least one y key, e.g. ['main/loss']")
        self._x_key = x_key
        self._observed = self._y_keys + ([] if x_key in _COUNTERS else [x_key])
        self._trigger = triggers.get_trigger(trigger)
        self._postprocess = postprocess
        self._filename = filename
        self._marker = marker
        self._grid = grid
        self._data: Dict[str, List[Tuple[float, float]]] = {k: [] for k in self._y_keys}
        self._summary = DictSummary()

    @staticmethod
    def available() -> bool:
        """Whether PlotReport can draw (matplotlib is installed), as Chainer's."""
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return False
        return True

    @property
    def data(self) -> Dict[str, List[Tuple[float, float]]]:
        """The points so far: ``{y_key: [(x, y), ...]}``."""
        return self._data

    def __call__(self, trainer) -> None:
        observation = trainer.observation
        self._summary.add({k: observation[k] for k in self._observed if k in observation})
        if self._trigger(trainer):
            summary, self._summary = self._summary, DictSummary()
            comm = comm_of(trainer)
            if comm.size > 1:
                summary = summary.allreduce(comm, keys=self._observed)   # known keys: 1 collective
            self._add_points(trainer, summary)
            if comm.rank == 0:
                self._draw(os.path.join(trainer.out, self._filename), summary)

    def _add_points(self, trainer, summary: DictSummary) -> None:
        means = {k: float(v) for k, v in summary.compute_mean().items()} if len(summary) else {}
        means['epoch'] = trainer.updater.epoch
        means['iteration'] = trainer.updater.iteration
        x = means.get(self._x_key)
        if x is None:  # the x key was not reported in this period: no point to place
            return
        for key in self._y_keys:
            if key in means:
                self._data[key].append((x, means[key]))

    def _draw(self, path: str, summary: DictSummary) -> None:
        figure = new_figure()
        axes = figure.add_subplot(111)
        axes.set_xlabel(self._x_key)
        if self._grid:
            axes.grid()
        for key, points in self._data.items():
            if points:
                xs, ys = zip(*points)
                axes.plot(xs, ys, marker=self._marker, label=key)
        if not axes.has_data():
            return
        if self._postprocess is not None:
            self._postprocess(figure, axes, summary)
        legend = axes.legend(bbox_to_anchor=(1.05, 1), loc='upper left', borderaxespad=0.)
        save_png(figure, path, bbox_extra_artists=(legend,), bbox_inches='tight')

    def guess_previous(self) -> None:
        """Its trigger guesses its previous position (the snapshot being resumed has
        no state for this extension: see IntervalTrigger.guess_previous)."""
        guess_previous(self._trigger)

    def state_dict(self) -> dict:
        return {'data': {k: [list(p) for p in v] for k, v in self._data.items()},
                'summary': self._summary.state_dict(), 'trigger': state_of(self._trigger)}

    def reshard_state(self, states: List[dict], rank: int) -> dict:
        """The state to resume from on another world size: the saved ranks' partial
        sums merged on rank 0, none on the others (see :func:`reshard_summary_state`)."""
        return reshard_summary_state(states, rank)

    def load_state_dict(self, state: dict) -> None:
        saved = state['data']
        self._data = {k: [tuple(p) for p in saved.get(k, [])] for k in self._y_keys}
        self._summary.load_state_dict(state['summary'])
        load_into(self._trigger, state['trigger'])
