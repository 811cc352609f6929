"""load_config / save_config: schema of defaults, YAML files, --set overrides, errors."""
import pytest
import yaml

from trainerlib.config import Choice, load_config, save_config
from trainerlib.errors import ConfigError, TrainerlibError

SCHEMA = {
    'model': Choice('mlp', 'cnn'),
    'seed': 0,
    'device': 'cpu',
    'amp': False,
    'extra': None,
    'layers': [64, 32],
    'train': {'epochs': 10, 'lr': 0.001, 'batch_size': 64},
}


def test_defaults_only():
    config = load_config(None, SCHEMA, [])
    assert config == {'model': 'mlp', 'seed': 0, 'device': 'cpu', 'amp': False, 'extra': None,
                      'layers': [64, 32], 'train': {'epochs': 10, 'lr': 0.001, 'batch_size': 64}}
    config['train']['epochs'] = 99  # new objects each time: the schema is not modified
    config['layers'].append(16)
    assert load_config(None, SCHEMA, []) == load_config(None, SCHEMA, [])
    assert load_config(None, SCHEMA, [])['train']['epochs'] == 10
    assert SCHEMA['layers'] == [64, 32]


@pytest.mark.parametrize('overrides, key, expected', [
    (['train.epochs=3'], ('train', 'epochs'), 3),
    (['model=cnn'], ('model',), 'cnn'),
    (['train.lr=0.01'], ('train', 'lr'), 0.01),
    (['train.lr=1'], ('train', 'lr'), 1.0),            # int accepted where a float is expected
    (['train.lr=1e-3'], ('train', 'lr'), 0.001),       # YAML 1.1 reads 1e-3 as text
    (['amp=true'], ('amp',), True),
    (['device=cuda:1'], ('device',), 'cuda:1'),
    (['extra={a: 1}'], ('extra',), {'a': 1}),           # None default: anything
    (['extra=null'], ('extra',), None),
    (['layers=[8, 4, 2]'], ('layers',), [8, 4, 2]),
    (['train={epochs: 2}'], ('train', 'epochs'), 2),   # a partial section
    (['train={epochs: 2}'], ('train', 'lr'), 0.001),   # ... keeps the other keys
    (['seed=1', 'seed=2'], ('seed',), 2),              # the last override wins
    (['train.epochs = 4'], ('train', 'epochs'), 4),
])
def test_overrides(overrides, key, expected):
    value = load_config(None, SCHEMA, overrides)
    for k in key:
        value = value[k]
    assert value == expected and type(value) is type(expected)


def test_file_then_overrides(tmp_path):
    path = tmp_path / 'run.yaml'
    path.write_text('model: cnn\ntrain:\n  epochs: 5\n  lr: 0.1\n')
    config = load_config(str(path), SCHEMA, ['train.epochs=7'])
    assert config['model'] == 'cnn'
    assert config['train'] == {'epochs': 7, 'lr': 0.1, 'batch_size': 64}


@pytest.mark.parametrize('text', ['', 'train:\n', '# only a comment\n'])
def test_empty_file_or_section_keeps_defaults(tmp_path, text):
    path = tmp_path / 'empty.yaml'
    path.write_text(text)
    assert load_config(path, SCHEMA, []) == load_config(None, SCHEMA, [])


@pytest.mark.parametrize('overrides, fragments', [
    # unknown keys: name the key and list the valid ones
    (['train.epoch=3'], ["unknown config key 'train.epoch'", "did you mean 'train.epochs'",
                         'batch_size, epochs, lr']),
    (['colour=red'], ["unknown config key 'colour'",
                      'amp, device, extra, layers, model, seed, train']),
    (['seed.x=1'], ["config key 'seed'", 'expects int', 'got dict']),
    # wrong types: name the key and the expected type
    (['train.epochs=abc'], ["config key 'train.epochs'", 'expects int', "got str 'abc'"]),
    (['train.epochs=2.5'], ["'train.epochs'", 'expects int', 'got float 2.5']),
    (['train.epochs=true'], ["'train.epochs'", 'expects int', 'got bool True']),
    (['train.lr=fast'], ["'train.lr'", 'expects float', "got str 'fast'"]),
    (['train.lr=true'], ["'train.lr'", 'expects float', 'got bool']),
    (['amp=1'], ["'amp'", 'expects bool', 'got int 1']),
    (['device=3'], ["'device'", 'expects str', 'got int 3']),
    (['layers=8'], ["'layers'", 'expects list']),
    (['train=3'], ["config section 'train'", 'must be a mapping', 'got int 3']),
    # choices: name the valid choices
    (['model=rnn'], ["config key 'model'", "must be one of 'mlp', 'cnn'", "got 'rnn'"]),
    (['model=1'], ["'model'", "must be one of 'mlp', 'cnn'"]),
    # malformed overrides
    (['train.epochs'], ['--set train.epochs: expected key=value']),
    (['=3'], ['key=value']),
    (['train..epochs=3'], ['key=value']),
    (['train.epochs=[1,'], ['not valid YAML']),
])
def test_override_errors(overrides, fragments):
    with pytest.raises(ConfigError) as info:
        load_config(None, SCHEMA, overrides)
    message = str(info.value)
    assert '\n' not in message
    assert f'--set {overrides[-1]}' in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize('text, fragments', [
    ('train:\n  epochz: 3\n', ["unknown config key 'train.epochz'", "did you mean 'train.epochs'"]),
    ('train:\n  epochs: ten\n', ["'train.epochs'", 'expects int']),
    ('- 1\n- 2\n', ['the config', 'must be a mapping', 'got list']),
    ('model: [\n', ['not valid YAML', 'line']),
    ('model: rnn\n', ["must be one of 'mlp', 'cnn'"]),
])
def test_file_errors(tmp_path, text, fragments):
    path = tmp_path / 'bad.yaml'
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path), SCHEMA, [])
    message = str(info.value)
    assert '\n' not in message and str(path) in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize('name, fragment', [('missing.yaml', 'not found'),
                                            ('.', 'is a directory; pass a YAML file')])
def test_missing_file(tmp_path, name, fragment):
    path = tmp_path / name
    with pytest.raises(ConfigError, match=fragment) as info:
        load_config(str(path), SCHEMA, [])
    assert isinstance(info.value, TrainerlibError) and isinstance(info.value, ValueError)


def test_save_config_round_trip(tmp_path):
    config = load_config(None, SCHEMA, ['model=cnn', 'extra={k: [1, 2]}'])
    path = tmp_path / 'sub' / 'config.yaml'
    save_config(config, str(path))
    assert yaml.safe_load(path.read_text()) == config
    assert list(yaml.safe_load(path.read_text())) == list(SCHEMA)  # keys keep their order
    assert load_config(str(path), SCHEMA, []) == config
    assert not list(path.parent.glob('*.tmp'))
