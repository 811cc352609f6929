"""The trainerlib extension library (``import extensions as E``)."""
from extensions.evaluator import Evaluator
from extensions.log_report import LogReport
from extensions.print_report import PrintReport
from extensions.progress_bar import ProgressBar
from extensions.snapshot_writers import Snapshot, snapshot, snapshot_object

__all__ = ['Evaluator', 'LogReport', 'PrintReport', 'ProgressBar', 'Snapshot', 'snapshot',
           'snapshot_object']
