"""The trainerlib extension library (``import extensions as E``)."""
from extensions.log_report import LogReport
from extensions.snapshot_writers import Snapshot, snapshot, snapshot_object

__all__ = ['LogReport', 'Snapshot', 'snapshot', 'snapshot_object']
