"""What ``--out`` already holds, and whether ``--resume`` may continue it with this config.

The rule (README, "Resuming a recipe"): a snapshot restores the optimizers' settings
(learning rates, betas, momentum, weight decay), the weights that the seed drew and the
data order, so a resumed run must use the settings of the run it continues. Every key
must equal the saved ``config.yaml`` except those the recipe lists in
``RESUME_MAY_CHANGE`` (its length, its device, how often it logs or saves): they take
effect on resume, and ``config.yaml`` is rewritten with them. So ``config.yaml`` always
states what the run uses.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import yaml

from trainerlib.errors import ConfigError

RUN_FILES = ('log', 'summary.json')
"""A directory holding one of these or a ``snapshot_*`` file (in it or one level down)
holds a run. A lone ``config.yaml`` does not: it is what a run that failed before its
first log or snapshot left, and a new run may replace it."""


def _listdir(folder: str) -> List[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _folders(out: str) -> Iterator[str]:
    yield out
    for name in _listdir(out):
        if os.path.isdir(os.path.join(out, name)):
            yield os.path.join(out, name)


def previous_run(out: str) -> List[str]:
    """Files of a run found in ``out`` or its subdirectories (one level), sorted."""
    return sorted(os.path.relpath(os.path.join(folder, name), out)
                  for folder in _folders(out) for name in _listdir(folder)
                  if name in RUN_FILES or name.startswith('snapshot_'))


def has_snapshots(out: str) -> bool:
    """Whether ``out`` (or a subdirectory) holds a ``snapshot_*`` file to resume from."""
    return any(name.startswith('snapshot_') for folder in _folders(out)
               for name in _listdir(folder))


def _flat(config: Any, prefix: str = '') -> Iterator[Tuple[str, Any]]:
    if isinstance(config, dict) and config:
        for key, value in config.items():
            yield from _flat(value, f'{prefix}{key}.')
    else:
        yield prefix[:-1], config


def _may_change(key: str, allowed: Sequence[str]) -> bool:
    return any(key == a or key.startswith(a + '.') for a in allowed)


def read_saved_config(out: str) -> Dict[str, Any]:
    """The ``config.yaml`` of the run in ``out`` ({} if there is none)."""
    path = os.path.join(out, 'config.yaml')
    if not os.path.isfile(path):
        return {}
    fix = ('restore it from a copy, or delete it to resume with the settings given now '
           '(the snapshots are still checked against the model and optimizers)')
    try:
        with open(path, encoding='utf-8') as f:
            saved = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        problem = getattr(e, 'problem', None) or getattr(e, 'strerror', None) or type(e).__name__
        raise ConfigError(f'--resume: the saved config {path} is damaged ({problem}); '
                          f'{fix}') from None
    if not isinstance(saved, dict):
        raise ConfigError(f'--resume: the saved config {path} is not a mapping of settings; '
                          f'{fix}')
    return saved


def check_resume(out: str, cfg: Dict[str, Any], may_change: Sequence[str]) -> None:
    """Refuse to resume a run of another recipe, or one whose snapshots hold other settings.

    Args:
        out: the output directory being resumed.
        cfg: the effective config of this command.
        may_change: dotted keys (or sections) that may differ from the saved config.
    """
    saved = read_saved_config(out)
    if not saved:
        return
    if saved.get('recipe') != cfg['recipe']:
        raise ConfigError(f"--resume: {out} holds a run of recipe {saved.get('recipe')!r}, "
                          f"not {cfg['recipe']!r}; choose another --out")
    if not has_snapshots(out):
        return  # nothing to continue: the run starts over with the settings given now
    before = dict(_flat(saved))
    for key, value in _flat(cfg):
        if _may_change(key, may_change) or before.get(key, value) == value:
            continue
        raise ConfigError(f'--resume: {key!r} is {value!r} but the run in {out} used '
                          f'{before[key]!r}, and its snapshots continue with that; resume with '
                          f'the same {key} (settings that may change on resume: '
                          f'{", ".join(may_change) or "none"}), or choose another --out')
