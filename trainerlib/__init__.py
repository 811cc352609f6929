"""trainerlib: Chainer's training architecture (Trainer, Updater, Extensions) on PyTorch."""
from trainerlib import convert, iterators, reporter, triggers, updaters  # noqa: F401
from trainerlib.errors import NonFiniteError, OutputDirError, SnapshotError, TrainerlibError
from trainerlib.extension import (PRIORITY_EDITOR, PRIORITY_READER, PRIORITY_SNAPSHOT,
                                  PRIORITY_WRITER, Extension, make_extension)
from trainerlib.models import Classifier
from trainerlib.preemption import Preempted, Preemption
from trainerlib.reporter import Reporter, report, report_scope
from trainerlib.summary import DictSummary, Summary
from trainerlib.trainer import Trainer
from trainerlib import training  # noqa: E402,F401  (chainer.training's path; after Trainer)

__version__ = '0.1.0'

__all__ = ['Classifier', 'DictSummary', 'Extension', 'NonFiniteError', 'OutputDirError',
           'PRIORITY_EDITOR', 'PRIORITY_READER', 'PRIORITY_SNAPSHOT', 'PRIORITY_WRITER',
           'Preempted', 'Preemption', 'Reporter', 'SnapshotError', 'Summary', 'Trainer',
           'TrainerlibError',
           'make_extension', 'report', 'report_scope', 'training', '__version__']
