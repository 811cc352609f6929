"""Run a function on W gloo ranks in fresh processes (imported by the multi-process tests).

``run_ranks(fn, world_size, tmp_path, *args)`` starts W spawned processes on 127.0.0.1
with a free port, each calling ``fn(comm, *args)`` with a trainerlib communicator, and
returns the W return values (which must pickle) in rank order. Every join is bounded:
on timeout the processes are killed and the test fails naming what it waited for.
"""
import multiprocessing
import os
import pickle
import socket
import traceback

TIMEOUT = 180.0  # seconds for a whole multi-process test body (a busy 2-core machine)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _child(fn, rank, world_size, port, result_path, args):
    os.environ.update({'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(port),
                       'RANK': str(rank), 'WORLD_SIZE': str(world_size),
                       'LOCAL_RANK': str(rank), 'LOCAL_WORLD_SIZE': str(world_size),
                       'GROUP_RANK': '0'})
    import torch
    torch.set_num_threads(1)
    from trainerlib.distributed import create_communicator
    try:
        comm = create_communicator(backend='gloo')
        result = ('ok', fn(comm, *args))
        comm.finalize()
    except BaseException:
        result = ('error', traceback.format_exc())
    with open(result_path, 'wb') as f:
        pickle.dump(result, f)


def run_ranks(fn, world_size, tmp_path, *args, timeout=TIMEOUT):
    """``[fn(comm, *args) on rank r for r in range(world_size)]``, run in W processes."""
    ctx = multiprocessing.get_context('spawn')
    port = free_port()
    paths = [os.path.join(str(tmp_path), f'.rank{r}.result') for r in range(world_size)]
    procs = [ctx.Process(target=_child, args=(fn, r, world_size, port, paths[r], args))
             for r in range(world_size)]
    for p in procs:
        p.start()
    for r, p in enumerate(procs):
        p.join(timeout)
        if p.is_alive():
            for q in procs:
                q.kill()
            raise AssertionError(f'rank {r} did not finish within {timeout} s (waited for its '
                                 f'process to exit after calling {fn.__name__})')
    results = []
    for r, path in enumerate(paths):
        if not os.path.exists(path):
            raise AssertionError(f'rank {r} exited with status {procs[r].exitcode} and no result')
        with open(path, 'rb') as f:
            status, value = pickle.load(f)
        if status == 'error':
            raise AssertionError(f'rank {r} failed:\n{value}')
        results.append(value)
    return results


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def torchrun_2(args, timeout=240.0):
    """``torchrun --standalone --nproc-per-node=2 <args>`` from the repository root, with
    its output captured; fails naming the command after ``timeout`` seconds."""
    import subprocess
    import sys
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
               '--nproc-per-node=2', *map(str, args)]
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': REPO}
    try:
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f'torchrun {" ".join(map(str, args))} did not exit within '
                             f'{timeout} s; its output so far: {e.stdout!r} {e.stderr!r}') from None


def final_result(out):
    """What a 2-rank test worker left in ``out``: each rank's ``final_rank{r}`` state and
    the log without ``elapsed_time``."""
    import json

    from trainerlib.serialization import load_state
    finals = [load_state(os.path.join(str(out), f'final_rank{r}')) for r in (0, 1)]
    with open(os.path.join(str(out), 'log')) as f:
        log = [{k: v for k, v in e.items() if k != 'elapsed_time'} for e in json.load(f)]
    return finals, log
