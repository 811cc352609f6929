"""Snapshot file names: the regex of exactly the names a ``str.format`` template produces."""
from __future__ import annotations

import numbers
import re
import string
from typing import Any, List, Tuple

from trainerlib.errors import ConfigError

FIELDS_FIX = ('fields are formatted with the trainer and must give non-negative integers, '
              'e.g. {.updater.iteration} or {.updater.epoch}; write a literal brace as {{ or }}')


def parse(template: Any) -> Tuple['re.Pattern[str]', List[str]]:
    """The regex of exactly the file names ``template`` can produce, and its fields.

    A field without a format spec gives an integer as ``str`` writes it
    (``(0|[1-9]\\d*)``: ``08`` is not one); with a spec (``:06d``), digits.

    Raises:
        ConfigError: not a valid ``str.format`` template, or a field that is not an
            attribute or item of the trainer.
    """
    if not isinstance(template, str) or not template:
        raise ConfigError(f'the snapshot filename must be a non-empty str.format template, '
                          f'got {template!r}; ' + FIELDS_FIX)
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ConfigError(f'snapshot filename {template!r} is not a valid str.format template '
                          f'({e}); ' + FIELDS_FIX) from None
    regex, fields, roots = [], [], []
    for literal, field, spec, _ in parsed:
        regex.append(re.escape(literal))
        if field is None:
            continue
        root = re.split(r'[.\[]', field, maxsplit=1)[0]
        if root not in ('', '0') or field == root:
            what = 'is the trainer itself' if field == root and root in ('', '0') else \
                'is not an attribute of the trainer'
            raise ConfigError(f'snapshot filename {template!r}: field {{{field}}} {what}; '
                              + FIELDS_FIX)
        if '{' in (spec or ''):
            raise ConfigError(f'snapshot filename {template!r}: nested fields in a format spec '
                              'are not supported; ' + FIELDS_FIX)
        regex.append(r'(\d+)' if spec else r'(0|[1-9]\d*)')
        fields.append('0' + field if root == '' else field)
        roots.append(root)
    if len(roots) > 1 and '' in roots:  # '{.a}_{.b}' formats its 2nd field from a 2nd argument
        raise ConfigError(f'snapshot filename {template!r} has several fields: number each '
                          f'(e.g. {{0.updater.epoch}}_{{0.updater.iteration}}), since '
                          'str.format reads an unnumbered field after the first from a '
                          'missing second argument; ' + FIELDS_FIX)
    return re.compile(''.join(regex)), fields


def check_fields(template: str, pattern: 're.Pattern[str]', fields: List[str],
                 trainer: Any) -> None:
    """Raise ConfigError unless every field of ``template`` formats to a non-negative
    integer with this trainer and the name it gives matches ``pattern``."""
    formatter = string.Formatter()
    for field in fields:
        try:
            value = formatter.get_field(field, (trainer,), {})[0]
        except Exception as e:  # AttributeError, KeyError, IndexError, TypeError …
            raise ConfigError(f'snapshot filename {template!r}: field '
                              f'{{{field.lstrip("0")}}} cannot be read from the trainer '
                              f'({type(e).__name__}: {e}); ' + FIELDS_FIX) from None
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ConfigError(f'snapshot filename {template!r}: field '
                              f'{{{field.lstrip("0")}}} is {value!r}, not a non-negative '
                              'integer (autoload and n_retains recognise snapshots by '
                              'it); ' + FIELDS_FIX)
    try:
        name = template.format(trainer)
    except Exception as e:  # a bad conversion (!x), mixed {} and {0} …
        raise ConfigError(f'snapshot filename {template!r} cannot be formatted ({e}); '
                          + FIELDS_FIX) from None
    if not pattern.fullmatch(name):
        raise ConfigError(f'snapshot filename {template!r} gives {name!r}, which is '
                          'not digits where the fields are (a format spec that pads with '
                          'spaces or writes hex?); ' + FIELDS_FIX)
