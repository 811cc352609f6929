"""The trainerlib extension library (``import extensions as E``)."""
from extensions.dump_graph import DumpGraph
from extensions.evaluator import Evaluator, create_multi_node_evaluator
from extensions.exponential_shift import ExponentialShift
from extensions.fail_on_non_number import FailOnNonNumber
from extensions.image_grid import ImageGrid
from extensions.inverse_shift import InverseShift
from extensions.linear_shift import LinearShift
from extensions.log_report import LogReport
from extensions.lr_scheduler import LRScheduler
from extensions.micro_average import MicroAverage
from extensions.mlflow_report import MLflowReport
from extensions.multistep_shift import MultistepShift
from extensions.observe_value import observe_lr, observe_value
from extensions.optuna_pruning import ChainerPruningExtension, OptunaPruning
from extensions.parameter_statistics import ParameterStatistics
from extensions.plot_report import PlotReport
from extensions.polynomial_shift import PolynomialShift
from extensions.print_report import PrintReport
from extensions.progress_bar import ProgressBar
from extensions import snapshot_writers
from extensions.snapshot_writers import (ProcessQueueWriter, ProcessWriter, QueueWriter,
                                         SimpleWriter, Snapshot, ThreadQueueWriter,
                                         ThreadWriter, snapshot, snapshot_object)
from extensions.step_shift import StepShift
from extensions.tensorboard_report import TensorBoardReport
from extensions.variable_statistics_plot import VariableStatisticsPlot
from extensions.warmup_shift import WarmupShift

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
