"""YAML configuration checked against a schema written as a nested dict of defaults.

The type of each default is the expected type (an int is accepted where a float
is expected; a float must be finite), ``None`` accepts anything, a nested dict is a
section, :class:`Choice` restricts a value to a few options and :class:`Nullable`
is a typed setting whose default is null (e.g. a path). A YAML mapping that
repeats a key is refused. Mistakes raise :class:`~trainerlib.errors.ConfigError`
with a one-line message::

    DEFAULTS = {'model': Choice('mlp', 'cnn'), 'train': {'epochs': 10, 'lr': 1e-3},
                'data': {'root': Nullable(str)}}
    config = load_config('run.yaml', DEFAULTS, ['train.epochs=3', 'model=cnn'])
"""
from __future__ import annotations

import copy
import difflib
import math
import os
import re
import reprlib
from typing import Any, Dict, Iterable, Optional

import yaml

from trainerlib.errors import ConfigError
from trainerlib.serialization import atomic_open

_FLOAT_TEXT = re.compile(r'^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$')


class Choice:
    """A value that must be one of ``choices``; the first one is the default."""

    def __init__(self, first: Any, *others: Any) -> None:
        self.choices = (first,) + others
        self.default = first

    def _allows(self, value: Any) -> bool:
        return any(type(value) is type(c) and value == c for c in self.choices)


class Nullable:
    """A value of type ``kind`` or None (the default), e.g. ``Nullable(str)`` for a path."""

    def __init__(self, kind: type, default: Any = None) -> None:
        self.kind = kind
        self.default = default


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping repeating a key (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f'{key!r} is given twice (lines {seen[key]} and {line}); '
                                  'keep one of them')
            seen[key] = line
        return super().construct_mapping(node, deep)


def safe_load_unique(text: Any) -> Any:
    """``yaml.safe_load`` that raises :class:`ConfigError` for a repeated mapping key."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: never builds objects


def _defaults(schema: Dict[str, Any]) -> Dict[str, Any]:
    return {k: _defaults(v) if isinstance(v, dict)
            else v.default if isinstance(v, (Choice, Nullable)) else copy.deepcopy(v)
            for k, v in schema.items()}


def _check(key: str, spec: Any, value: Any, source: str) -> Any:
    """Return ``value`` (an int or numeric text becomes a float where one is expected)."""
    if spec is None or (isinstance(spec, Choice) and spec._allows(value)):
        return value
    if isinstance(spec, Nullable):
        if value is None or isinstance(value, spec.kind) and not isinstance(value, bool):
            return value
        raise ConfigError(f'config key {key!r}{source} expects {spec.kind.__name__} or null, '
                          f'got {type(value).__name__} {reprlib.repr(value)}')
    if isinstance(spec, Choice):
        raise ConfigError(f'config key {key!r}{source} must be one of '
                          f'{", ".join(map(repr, spec.choices))}; got {reprlib.repr(value)}')
    if isinstance(spec, float) and not isinstance(value, bool) and (
            isinstance(value, (int, float))
            or isinstance(value, str) and _FLOAT_TEXT.match(value.strip())):
        number = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        if not math.isfinite(number):
            raise ConfigError(f'config key {key!r}{source} must be a finite number, got {value!r}')
        return number
    if isinstance(value, type(spec)) and isinstance(value, bool) == isinstance(spec, bool):
        return value
    raise ConfigError(f'config key {key!r}{source} expects {type(spec).__name__}, got '
                      f'{type(value).__name__} {reprlib.repr(value)}')


def _unknown(key: Any, prefix: str, schema: Dict[str, Any], source: str) -> ConfigError:
    full = prefix + str(key)
    valid = sorted(schema)
    close = difflib.get_close_matches(str(key), valid, n=1)
    hint = f'; did you mean {prefix + close[0]!r}? Valid' if close else '; valid'
    where = f' under {prefix[:-1]!r}' if prefix else ''
    return ConfigError(f'unknown config key {full!r}{source}{hint} keys{where}: '
                       f'{", ".join(valid)}')


def _merge(config: Dict[str, Any], schema: Dict[str, Any], data: Any, prefix: str,
           source: str) -> None:
    if data is None:  # an empty section in YAML
        return
    if not isinstance(data, dict):
        what = f'config section {prefix[:-1]!r}' if prefix else 'the config'
        raise ConfigError(f'{what}{source} must be a mapping of {", ".join(sorted(schema))}; '
                          f'got {type(data).__name__} {reprlib.repr(data)}')
    for key, value in data.items():
        if key not in schema:
            raise _unknown(key, prefix, schema, source)
        spec = schema[key]
        if isinstance(spec, dict):
            _merge(config[key], spec, value, f'{prefix}{key}.', source)
        else:
            config[key] = _check(prefix + key, spec, value, source)


def _read_yaml(path: str) -> Any:
    if os.path.isdir(path):
        raise ConfigError(f'config file {path!r} is a directory; pass a YAML file (e.g. '
                          f'{os.path.join(path, "config.yaml")})')
    if not os.path.isfile(path):
        raise ConfigError(f'config file {path!r} not found; pass an existing YAML file to --config')
    try:
        with open(path, encoding='utf-8') as f:
            return safe_load_unique(f)
    except ConfigError as e:
        raise ConfigError(f'config file {path!r}: {e}') from None
    except yaml.YAMLError as e:
        mark = getattr(e, 'problem_mark', None)
        at = f' at line {mark.line + 1}, column {mark.column + 1}' if mark else ''
        problem = getattr(e, 'problem', None) or str(e).splitlines()[0]
        raise ConfigError(f'config file {path!r} is not valid YAML: {problem}{at}') from None
    except (OSError, UnicodeDecodeError) as e:  # unreadable, or not text
        raise ConfigError(f'config file {path!r} cannot be read: {e}') from None


def _parse_override(item: str) -> Dict[str, Any]:
    key, sep, text = item.partition('=')
    key = key.strip()
    if not sep or not key or any(not part for part in key.split('.')):
        raise ConfigError(f'--set {item}: expected key=value or section.key=value '
                          '(e.g. train.epochs=3)')
    try:
        value = safe_load_unique(text)
    except ConfigError as e:
        raise ConfigError(f'--set {item}: {e}') from None
    except yaml.YAMLError as e:
        raise ConfigError(f'--set {item}: the value is not valid YAML '
                          f'({getattr(e, "problem", None) or type(e).__name__})') from None
    for part in reversed(key.split('.')):
        value = {part: value}
    return value


def load_config(path: Optional[str], defaults: Dict[str, Any],
                overrides: Iterable[str] = ()) -> Dict[str, Any]:
    """Defaults, updated by the YAML file at ``path`` (if any), then by ``overrides``.

    ``path`` is a YAML mapping of known keys (sections may be partial) or None;
    ``defaults`` the schema (see the module doc); each override is ``'key.sub=value'``
    whose value is read as YAML (``train.epochs=3`` is an int, ``model=cnn`` a str).
    Returns a new nested dict with every key of ``defaults``; raises
    :class:`ConfigError` for a missing/invalid file, unknown key, wrong type or choice.
    """
    config = _defaults(defaults)
    if path is not None:
        _merge(config, defaults, _read_yaml(os.fspath(path)), '', f' (in {os.fspath(path)})')
    for item in overrides:
        _merge(config, defaults, _parse_override(item), '', f' (from --set {item})')
    return config


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def save_config(config: Dict[str, Any], path: str) -> None:
    """Write ``config`` as YAML, keys in order, atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_open(path, 'w', durable=False) as f:
        yaml.safe_dump(_plain(config), f, sort_keys=False, allow_unicode=True)
