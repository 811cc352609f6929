"""MLflowReport: the config, the LogReport entries and the plots of a run, in MLflow."""
from __future__ import annotations

import glob
import json
import numbers
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Union
from urllib.parse import urlparse

from trainerlib.errors import SnapshotMismatchError, TrainerlibError
from trainerlib.extension import PRIORITY_READER

from trainerlib.extensions.log_reader import LogEntryTrigger, LogReader
from trainerlib.extensions.log_report import LogReport

_METRICS_PER_BATCH, _PARAMS_PER_BATCH = 1000, 100   # MLflow's limits per log_batch
_NOT_ALLOWED = re.compile(r'[^/\w.\- ]')


def mlflow_module() -> Any:
    """The ``mlflow`` package, or a clear ImportError naming the extra to install."""
    try:
        import mlflow
        import mlflow.entities
        import mlflow.exceptions
    except ImportError:
        raise ImportError('MLflowReport needs mlflow: pip install trainerlib[mlflow]') from None
    return mlflow


def mlflow_name(key: str) -> str:
    """``key`` as an MLflow metric or param name.

    MLflow allows letters, digits, ``_ - . /`` and spaces (and ``:`` except on Windows),
    and stores names as paths; so any other character (``:`` too, for the same names on
    every system) becomes ``_``, as does an empty, ``.`` or ``..`` path segment.
    ``validation/main/accuracy`` stays as it is.
    """
    parts = _NOT_ALLOWED.sub('_', str(key)).split('/')
    return '/'.join('_' if part in ('', '.', '..') else part for part in parts)[:250]


def flat_params(config: Mapping[str, Any], prefix: str = '') -> Dict[str, str]:
    """A nested config as MLflow params: ``{'train': {'lr': 0.1}} -> {'train.lr': '0.1'}``.

    Strings are kept; other values are written as JSON (``true``, ``null``, ``[1, 2]``).
    """
    flat: Dict[str, str] = {}
    for key, value in config.items():
        name = f'{prefix}{key}'
        if isinstance(value, Mapping) and value:
            flat.update(flat_params(value, name + '.'))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            flat[mlflow_name(name)] = text
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class MLflowReport(LogReader):
    """Logs a run to MLflow: the config as params, each LogReport entry as metrics.

    At the start of a fresh run it creates an MLflow run (through ``MlflowClient``:
    explicit run ids, no global active run) and logs ``params`` flattened to
    ``a.b.c`` keys. Every numeric value of each new LogReport entry is logged at
    ``step = entry['iteration']`` under its key (``main/loss``,
    ``validation/main/accuracy``, ``epoch``, ``elapsed_time`` …; see
    :func:`mlflow_name` for the characters MLflow refuses), in one ``log_batch`` per
    entry: the same numbers as the ``log`` file. Like PrintReport it is called only
    where its LogReport can emit an entry. At the end it logs the PNG files of
    ``trainer.out`` (plots) and ``artifacts``, and ends the run ``FINISHED``
    (``FAILED`` on an error, ``KILLED`` on preemption); :meth:`log_artifacts` adds
    files written afterwards (e.g. ``summary.json``). Rank 0 only.

    The run id and the last step logged are saved: a resumed trainer continues the
    same MLflow run, without logging the params again, and logs only the entries
    whose step is above every step the run already has (also those a killed run
    logged after its last snapshot), so each step appears once.

    The default store is MLflow's file store (plain files, easy to copy off a
    cluster), which MLflow >= 3.13 only opens with ``MLFLOW_ALLOW_FILE_STORE=true``:
    for a local store this extension sets that variable unless it is set. Look at it
    with ``MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri <out>/mlruns``.

    Example (in a recipe, ``cfg`` the effective config)::

        trainer.extend(E.LogReport())
        report = E.MLflowReport(params=cfg, experiment=cfg['recipe'])
        trainer.extend(report)
        trainer.run()
        report.log_artifacts(['summary.json'])    # once it is written

    Args:
        params: the effective config (a nested dict) to log as params.
        log_report: name of the registered LogReport (default ``'LogReport'``), or a
            LogReport object that this extension owns (feeds and saves).
        tracking_uri: where to log (``sqlite:///…``, ``http://…``, a path); default
            the file store ``<trainer.out>/mlruns`` (as a ``file:`` URI).
        experiment: experiment name, created if needed; default the name of
            ``trainer.out`` (or ``'trainerlib'``).
        run_name: the MLflow run's name (default: one MLflow makes up).
        artifacts: more files or folders to log at the end (relative to
            ``trainer.out`` unless absolute); a missing one is skipped with a warning.

    Attributes:
        run_id: the MLflow run's id (``''`` until the trainer starts).
        tracking_uri: the store logged to (None until the trainer starts).
    """

    priority = PRIORITY_READER - 1   # after the LogReport: sees the entry of its iteration
    rank0_only = True

    def __init__(self, params: Optional[Mapping[str, Any]] = None,
                 log_report: Union[str, LogReport] = 'LogReport',
                 tracking_uri: Optional[str] = None, experiment: Optional[str] = None,
                 run_name: Optional[str] = None, artifacts: Sequence[str] = ()) -> None:
        super().__init__(log_report)
        self._mlflow = mlflow_module()
        self.trigger = LogEntryTrigger(self)
        self._params = flat_params(params or {})
        self._uri, self._experiment, self._run_name = tracking_uri, experiment, run_name
        self._artifacts = list(artifacts)
        self.client: Any = None
        self.tracking_uri: Optional[str] = None
        self.run_id = ''     # saved
        self._step = -1      # the last step logged (saved)
        self._out = '.'
        self._status = 'FINISHED'

    def initialize(self, trainer) -> None:
        super().initialize(trainer)
        self._out = trainer.out
        uri = self._uri or Path(trainer.out, 'mlruns').resolve().as_uri()
        scheme = urlparse(uri).scheme
        if scheme in ('', 'file') or len(scheme) == 1:   # a local path (C:\… too)
            os.environ.setdefault('MLFLOW_ALLOW_FILE_STORE', 'true')
        self.tracking_uri = uri
        client = self._mlflow.MlflowClient(tracking_uri=uri)
        if self.run_id:
            self._continue_run(client)
        else:
            self._start_run(client, trainer.out)
        self.client = client   # (not before: finalize then has nothing to end)

    def _start_run(self, client: Any, out: str) -> None:
        name = self._experiment or os.path.basename(os.path.abspath(out)) or 'trainerlib'
        found = client.get_experiment_by_name(name)
        if found is not None and found.lifecycle_stage == 'deleted':
            raise TrainerlibError(f'MLflowReport: the MLflow experiment {name!r} in '
                                  f'{self.tracking_uri} is deleted; restore it or choose '
                                  'another experiment=')
        experiment_id = found.experiment_id if found else client.create_experiment(name)
        self.run_id = client.create_run(experiment_id, run_name=self._run_name).info.run_id
        params = [self._mlflow.entities.Param(k, v) for k, v in self._params.items()]
        for i in range(0, len(params), _PARAMS_PER_BATCH):
            client.log_batch(self.run_id, params=params[i:i + _PARAMS_PER_BATCH],
                             synchronous=True)

    def _continue_run(self, client: Any) -> None:
        try:
            run = client.get_run(self.run_id)
        except self._mlflow.exceptions.MlflowException:
            raise SnapshotMismatchError(
                f'has MLflow run {self.run_id}, which {self.tracking_uri} does not hold',
                'resume with the tracking_uri the run was logged to') from None
        for key in run.data.metrics:   # a killed run may have logged past its snapshot
            steps = [m.step for m in client.get_metric_history(self.run_id, key)]
            self._step = max([self._step] + steps)
        client.update_run(self.run_id, status='RUNNING')

    def __call__(self, trainer) -> None:
        log = self.read_log(trainer)
        if log and log[-1]['iteration'] > self._step:
            self._log_entries(log)

    def _log_entries(self, log: list) -> None:
        new = []
        for entry in reversed(log):
            if entry['iteration'] <= self._step:
                break
            new.append(entry)
        if not new:
            return
        now, metric = int(time.time() * 1000), self._mlflow.entities.Metric
        metrics = [metric(mlflow_name(key), float(value), now, entry['iteration'])
                   for entry in reversed(new) for key, value in entry.items()
                   if key != 'iteration' and _is_number(value)]
        for i in range(0, len(metrics), _METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + _METRICS_PER_BATCH],
                                  synchronous=True)
        self._step = new[0]['iteration']

    def log_artifacts(self, paths: Iterable[str]) -> None:
        """Copy files (a folder: its content, under its name) into the run's artifacts.

        Relative paths are relative to ``trainer.out``. Callable after training, e.g.
        for ``summary.json``; does nothing where the extension did not run (ranks
        other than 0).
        """
        if self.client is None:
            return
        for path in paths:
            full = os.path.join(self._out, path)   # (an absolute path stays as it is)
            if os.path.isdir(full):
                name = os.path.basename(os.path.normpath(full))
                self.client.log_artifacts(self.run_id, full, artifact_path=name)
            else:
                self.client.log_artifact(self.run_id, full)

    def on_error(self, trainer, exc: BaseException, tb) -> None:
        self._status = 'FAILED'

    def on_preemption(self, trainer) -> None:
        self._status = 'KILLED'

    def finalize(self, trainer=None) -> None:
        """Log the entries emitted since the last call, the PNG plots of ``trainer.out``
        and ``artifacts``; end the MLflow run."""
        super().finalize(trainer)
        if self.client is None:
            return
        if self._resolved is not None:
            self._log_entries(self._resolved.log)
        given = []
        for path in self._artifacts:
            if os.path.exists(os.path.join(self._out, path)):
                given.append(path)
            else:
                warnings.warn(f'MLflowReport: artifact {path!r} does not exist (skipped)',
                              UserWarning, stacklevel=2)
        self.log_artifacts(sorted(glob.glob(os.path.join(glob.escape(self._out), '*.png')))
                           + given)
        self.client.set_terminated(self.run_id, status=self._status)

    def state_dict(self) -> dict:
        return {**super().state_dict(), 'run_id': self.run_id, 'step': self._step}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.run_id, self._step = state['run_id'], state['step']
