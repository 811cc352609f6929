"""Fault injection: kill -9 at random points, SIGTERM, double signals, grace periods.

Each case runs ``tests/fault_worker.py`` as a subprocess (it always autoloads), kills
it, resumes it, and compares the end with a run never interrupted: the final
parameters and the log must be bit-identical, and no snapshot that autoload can pick
may ever be corrupt.
"""
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from trainerlib.errors import SnapshotError
from trainerlib.serialization import load_state

WORKER = str(Path(__file__).with_name('fault_worker.py'))
ITERATIONS = 60
SNAPSHOT_EVERY = 6  # as in fault_worker.py
PHASES = ('update', 'mid-write', 'pre-rename', 'post-rename', 'retention')
ORDER = {phase: i for i, phase in enumerate(PHASES)}  # within one iteration


def run_worker(out, *args, timeout=120, check=True):
    proc = subprocess.run([sys.executable, WORKER, str(out), '--iterations', str(ITERATIONS),
                           *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f'worker failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}')
    return proc


WAIT = 120.0   # seconds: the bound of every wait for a worker's state (a busy machine)


def read_until(proc, prefix, timeout=WAIT):
    """The first line of the worker's stdout that starts with ``prefix``; fails (and kills
    the worker) after ``timeout`` seconds, naming what it waited for."""
    found = []

    def scan():
        for line in proc.stdout:
            if line.startswith(prefix):
                found.append(line)
                return

    reader = threading.Thread(target=scan, daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        proc.kill()
        reader.join(30)
        raise AssertionError(f'waited {timeout} s for the worker to print {prefix!r}')
    if not found:
        raise AssertionError(f'the worker ended ({proc.wait()}) before printing {prefix!r}')
    return found[0]


def start_worker(out, *args):
    """Start the worker and return once it has completed its first iteration."""
    proc = subprocess.Popen([sys.executable, WORKER, str(out), '--iterations', str(ITERATIONS),
                             *args], stdout=subprocess.PIPE, text=True)
    return proc, read_until(proc, 'iteration')


def started_at(proc):
    lines = [line for line in proc.stdout.splitlines() if line.startswith('started at')]
    return int(lines[0].split()[-1])


def final_state(out):
    return load_state(str(Path(out) / 'final'))


def log_without_time(out):
    return [{k: v for k, v in e.items() if k != 'elapsed_time'}
            for e in json.loads((Path(out) / 'log').read_text())]


def assert_same_run(out, reference):
    state, expected = final_state(out), final_state(reference)
    assert state.keys() == expected.keys()
    for key in expected:
        assert torch.equal(state[key], expected[key]), key
    assert log_without_time(out) == log_without_time(reference)


def snapshot_files(out):
    """Iterations of the snapshot files autoload could pick, and whether each loads."""
    found = {}
    for path in Path(out).glob('snapshot_iter_*'):
        try:
            load_state(str(path))
            found[int(path.name.rsplit('_', 1)[1])] = True
        except SnapshotError:
            found[int(path.name.rsplit('_', 1)[1])] = False
    return found


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp('reference')
    proc = run_worker(out)
    assert proc.returncode == 0 and 'done' in proc.stdout
    return out


def kill_plan(seed, count):
    """``count`` distinct (iteration, phase) kill points, in the order a run meets them."""
    rng = random.Random(seed)
    points = set()
    while len(points) < count:
        phase = rng.choice(PHASES)
        if phase == 'update':
            iteration = rng.randrange(1, ITERATIONS + 1)
        else:  # a phase of snapshot writing: an iteration that writes one
            iteration = SNAPSHOT_EVERY * rng.randrange(1, ITERATIONS // SNAPSHOT_EVERY + 1)
        points.add((iteration, phase))
    return sorted(points, key=lambda p: (p[0], ORDER[p[1]]))


def test_kill9_at_random_points_resumes_bit_identical(tmp_path, reference):
    out = tmp_path / 'run'
    plan = kill_plan(seed=2026, count=12)
    assert len({phase for _, phase in plan}) >= 4
    record = []
    for iteration, phase in plan:
        proc = run_worker(out, '--kill-at', f'{iteration}:{phase}')
        assert proc.returncode == -signal.SIGKILL, (iteration, phase, proc.stderr)
        snapshots = snapshot_files(out)
        # an atomic write never leaves a corrupt file under a snapshot's name
        assert all(snapshots.values()), (iteration, phase, snapshots)
        record.append((iteration, phase, max(snapshots, default=0), started_at(proc)))
    proc = run_worker(out)
    assert proc.returncode == 0 and 'done' in proc.stdout
    assert 'autoload skipped' not in proc.stderr
    assert_same_run(out, reference)
    assert not [p for p in os.listdir(out) if p.endswith('.tmp')]  # partial writes removed
    names = set(os.listdir(out)) - {'final', 'log'}
    assert 'snapshot_iter_60' in names and all(n.startswith('snapshot_iter_') for n in names)
    for (iteration, phase, newest, _), (_, _, _, start) in zip(record, record[1:]):
        assert start == newest  # each resume started from the newest snapshot on disk
    # where the kill fell after the rename, that snapshot was kept and used
    for iteration, phase, newest, _ in record:
        expected = iteration if phase in ('post-rename', 'retention') else None
        if expected is not None:
            assert newest == expected


def test_kill9_at_random_times_resumes_bit_identical(tmp_path, reference):
    out = tmp_path / 'run'
    rng = random.Random(7)
    kills = 0
    for _ in range(3):
        proc, _ = start_worker(out, '--sleep', '0.02')
        time.sleep(rng.uniform(0.0, 1.0))
        proc.kill()
        proc.communicate(timeout=60)
        if proc.returncode == -signal.SIGKILL:
            kills += 1
        assert all(snapshot_files(out).values())
    assert kills >= 1
    assert run_worker(out).returncode == 0
    assert_same_run(out, reference)


def test_sigterm_snapshots_then_resumes_identically(tmp_path, reference):
    out = tmp_path / 'run'
    proc = run_worker(out, '--sigterm-at', '23', check=False)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert 'Traceback' not in proc.stderr
    assert 'iteration 24' not in proc.stdout  # stopped after the iteration it was in
    assert snapshot_files(out) == {18: True, 23: True}  # the preemption snapshot
    proc = run_worker(out)
    assert started_at(proc) == 23 and proc.returncode == 0
    assert_same_run(out, reference)


def test_external_sigterm_and_sigint(tmp_path, reference):
    out = tmp_path / 'run'
    for signum in (signal.SIGTERM, signal.SIGINT):
        proc, line = start_worker(out, '--sleep', '0.05')
        proc.send_signal(signum)
        stdout, _ = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signum
        last = max(int(line.split()[1]) for line in (line + stdout).splitlines()
                   if line.startswith('iteration'))
        assert snapshot_files(out)[last]  # a snapshot of the last complete iteration
    assert run_worker(out).returncode == 0
    assert_same_run(out, reference)


def test_second_signal_aborts_at_once(tmp_path):
    proc, _ = start_worker(tmp_path, '--sleep', '0.05', '--hang-on-preemption', '60')
    proc.send_signal(signal.SIGTERM)
    read_until(proc, 'hanging in on_preemption')
    assert proc.poll() is None  # still finishing (hangs in on_preemption)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM  # killed by the signal's default action
    assert time.monotonic() - start < 10


def test_grace_period_ends_a_stuck_shutdown(tmp_path):
    start = time.monotonic()
    proc = run_worker(tmp_path, '--sigterm-at', '3', '--hang-on-preemption', '60',
                      '--grace-period', '1', check=False, timeout=60)
    assert proc.returncode == -signal.SIGTERM
    assert time.monotonic() - start < 40  # not the 60 s hang


def test_corrupt_newest_snapshot_is_skipped_with_a_reason(tmp_path, reference):
    out = tmp_path / 'run'
    assert run_worker(out, '--kill-at', '40:update').returncode == -signal.SIGKILL
    # snapshot 36 may still have been in the writer thread at the kill (then 30 is newest),
    # and the kill may land after a new snapshot was committed and before the oldest was
    # deleted (the design allows it: three files for a moment)
    snapshots = snapshot_files(out)
    assert all(snapshots.values()) and max(snapshots) in (30, 36) and len(snapshots) in (2, 3)
    newest, previous = sorted(snapshots, reverse=True)[:2]
    path = out / f'snapshot_iter_{newest}'
    path.write_bytes(path.read_bytes()[:1000])
    proc = run_worker(out)
    assert 'autoload skipped' in proc.stderr and path.name in proc.stderr
    assert started_at(proc) == previous
    assert_same_run(out, reference)


def test_a_pickle_with_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / 'pwned'

    class Payload:
        def __reduce__(self):
            return (os.system, (f'touch {marker}',))

    out = tmp_path / 'run'
    out.mkdir()
    torch.save({'format': 'trainerlib', 'version': '0', 'state': Payload()},
               str(out / 'snapshot_iter_99'))
    proc = run_worker(out, check=False)
    assert proc.returncode != 0
    assert 'could be loaded' in proc.stderr and 'snapshot_iter_99' in proc.stderr
    assert not marker.exists()
    assert (out / 'snapshot_iter_99').exists()  # refused, not deleted
