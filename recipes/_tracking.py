"""``--mlflow [URI]``: the trainers of a recipe log to MLflow (config, metrics, plots, summary).

A recipe that passes each trainer it builds to ``ctx.trainer_hook`` (and says so with
``TRAINER_HOOK = True``, as ``classify`` does) gets one :class:`MLflowReport` per trainer:
one MLflow run per trainer (named after it, e.g. ``mlp``, ``cnn``) in the experiment named
after the recipe, the effective config as params, every log entry as metrics, the PNG
plots and, once the recipe has returned, ``summary.json`` as artifacts. ``URI`` defaults
to the file store ``OUT/mlruns``. A resumed run (``--resume``) continues the same MLflow runs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from trainerlib.errors import ConfigError


class MLflowTracking:
    """Builds the MLflowReport of each trainer; logs the summary afterwards.

    Raises:
        ConfigError: mlflow is not installed, or the recipe does not hand out its trainers.
    """

    def __init__(self, recipe: Any, cfg: Dict[str, Any], out: str, uri: str) -> None:
        if not getattr(recipe, 'TRAINER_HOOK', False):
            raise ConfigError(f'--mlflow: recipe {recipe.NAME!r} does not hand its trainers to '
                              'the launcher yet; use extensions.MLflowReport in your own '
                              'script, or a recipe that does (classify)')
        from trainerlib.extensions.mlflow_report import mlflow_module
        try:
            mlflow_module()
        except ImportError as e:
            raise ConfigError(f'--mlflow: {e}') from None
        self.cfg, self.out = cfg, out
        self.uri = uri or Path(out, 'mlruns').resolve().as_uri()
        self.reports: List[Any] = []

    def hook(self, name: str, trainer: Any) -> None:
        """``Context.trainer_hook``: extend ``trainer`` with its MLflowReport."""
        from trainerlib.extensions.mlflow_report import MLflowReport
        report = MLflowReport(params=self.cfg, tracking_uri=self.uri,
                              experiment=self.cfg['recipe'], run_name=name)
        trainer.extend(report)
        self.reports.append(report)

    def log_files(self, paths: List[str]) -> None:
        """Add files written after training (``summary.json``) to every run."""
        for report in self.reports:
            report.log_artifacts([os.path.abspath(p) for p in paths])


def tracking_for(recipe: Any, cfg: Dict[str, Any], out: str,
                 uri: Optional[str]) -> Optional[MLflowTracking]:
    """The tracking asked for on the command line (None: ``--mlflow`` not given)."""
    return None if uri is None else MLflowTracking(recipe, cfg, out, uri)
