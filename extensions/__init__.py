"""The trainerlib extension library: ``import trainerlib.extensions as E``.

Installed as ``trainerlib.extensions``; in the checkout ``import extensions as E`` gives the
very same modules (see :mod:`trainerlib._alias`)."""
if __name__ == 'extensions':   # the checkout's short name: an alias, not a copy
    from trainerlib._alias import alias_package
    alias_package(__name__, 'trainerlib.extensions')
else:
    from trainerlib.extensions.dump_graph import DumpGraph
    from trainerlib.extensions.evaluator import Evaluator, create_multi_node_evaluator
    from trainerlib.extensions.exponential_shift import ExponentialShift
    from trainerlib.extensions.fail_on_non_number import FailOnNonNumber
    from trainerlib.extensions.image_grid import ImageGrid
    from trainerlib.extensions.inverse_shift import InverseShift
    from trainerlib.extensions.linear_shift import LinearShift
    from trainerlib.extensions.log_report import LogReport
    from trainerlib.extensions.lr_scheduler import LRScheduler
    from trainerlib.extensions.micro_average import MicroAverage
    from trainerlib.extensions.mlflow_report import MLflowReport
    from trainerlib.extensions.multistep_shift import MultistepShift
    from trainerlib.extensions.observe_value import observe_lr, observe_value
    from trainerlib.extensions.optuna_pruning import ChainerPruningExtension, OptunaPruning
    from trainerlib.extensions.parameter_statistics import ParameterStatistics
    from trainerlib.extensions.plot_report import PlotReport
    from trainerlib.extensions.polynomial_shift import PolynomialShift
    from trainerlib.extensions.print_report import PrintReport
    from trainerlib.extensions.progress_bar import ProgressBar
    from trainerlib.extensions import snapshot_writers
    from trainerlib.extensions.snapshot_writers import (ProcessQueueWriter, ProcessWriter,
                                                        QueueWriter, SimpleWriter, Snapshot,
                                                        ThreadQueueWriter, ThreadWriter, snapshot,
                                                        snapshot_object)
    from trainerlib.extensions.step_shift import StepShift
    from trainerlib.extensions.tensorboard_report import TensorBoardReport
    from trainerlib.extensions.variable_statistics_plot import VariableStatisticsPlot
    from trainerlib.extensions.warmup_shift import WarmupShift

    __all__ = ['DumpGraph', 'Evaluator', 'ExponentialShift', 'FailOnNonNumber', 'ImageGrid',
               'InverseShift', 'LRScheduler', 'LinearShift', 'LogReport', 'MLflowReport',
               'MicroAverage', 'MultistepShift',
               'ParameterStatistics', 'PlotReport', 'PolynomialShift', 'PrintReport', 'ProgressBar',
               'ProcessQueueWriter', 'ProcessWriter', 'QueueWriter', 'SimpleWriter', 'Snapshot',
               'StepShift', 'TensorBoardReport', 'ThreadQueueWriter', 'ThreadWriter',
               'VariableStatisticsPlot', 'WarmupShift',
               'ChainerPruningExtension', 'OptunaPruning',
               'create_multi_node_evaluator', 'observe_lr', 'observe_value', 'snapshot',
               'snapshot_object', 'snapshot_writers']
