"""Damaged data files give one-line user errors that name the file (and list:line) and the fix."""
import gzip
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainerlib.cli import run_cli
from trainerlib.convert import concat_examples
from trainerlib.datasets import LabeledImageDataset, get_kmnist_test, get_mnist_test
from trainerlib.datasets.real import DATA_DIR
from trainerlib.errors import DataError, TrainerlibError
from trainerlib.iterators import SerialIterator

REPO = Path(__file__).resolve().parent.parent
KMNIST_IMGS, KMNIST_LABELS = 'kmnist-test-imgs.npz', 'kmnist-test-labels.npz'
MNIST_IMGS, MNIST_LABELS = 't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'


def check_message(exc, names, fix):
    """The error is a trainerlib user error of one line naming ``names`` and matching ``fix``."""
    message = str(exc)
    assert isinstance(exc, TrainerlibError), repr(exc)
    assert '\n' not in message and '\r' not in message, message
    for name in names:
        assert str(name) in message, (name, message)
    assert fix.lower() in message.lower(), (fix, message)
    assert 'allow_pickle' not in message and 'weights_only' not in message, message


# ---------------------------------------------------------------- damage helpers

def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def flip_bit(path, at=0.5):
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x10
    path.write_bytes(bytes(data))


def random_bytes(path):
    path.write_bytes(b'\x00' + np.random.RandomState(0).bytes(999))


def copy_shipped(root, sub):
    shutil.copytree(DATA_DIR / sub, root / sub)
    return root / sub


# ---------------------------------------------------------------- KMNIST .npz

def npz_arr(path):
    with np.load(path, allow_pickle=False) as z:
        return z['arr_0']


def npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def stored_npz_with_flip(path):
    """Rewrite as an uncompressed npz and flip a data byte: zipfile reports a bad CRC-32."""
    np.savez(path, arr_0=npz_arr(path))
    flip_bit(path, 0.6)


KMNIST_CASES = {
    'truncated': (KMNIST_IMGS, truncate, 'damaged'),
    'bit-flipped': (KMNIST_IMGS, flip_bit, 'damaged'),
    'bad CRC': (KMNIST_LABELS, stored_npz_with_flip, 'Bad CRC-32'),
    'random bytes': (KMNIST_IMGS, random_bytes, 'not a NumPy .npz'),
    'npy not npz': (KMNIST_LABELS, lambda p: p.write_bytes(npy_bytes(npz_arr(p))), '.npy'),
    'missing key': (KMNIST_IMGS, lambda p: np.savez(p, images=npz_arr(p)), "no array 'arr_0'"),
    'object array': (KMNIST_LABELS, lambda p: np.savez(p, arr_0=np.array([1, 'a'], object)),
                     'pickled (object) array'),
    'wrong dtype': (KMNIST_IMGS, lambda p: np.savez(p, arr_0=npz_arr(p).astype(np.float32)),
                    'expected uint8'),
    'wrong shape': (KMNIST_IMGS, lambda p: np.savez(p, arr_0=npz_arr(p).reshape(10000, -1)),
                    '(N, H, W)'),
    'wrong count': (KMNIST_LABELS, lambda p: np.savez(p, arr_0=npz_arr(p)[:-1]),
                    'disagree in count'),
    'label range': (KMNIST_LABELS, lambda p: np.savez(p, arr_0=npz_arr(p) + 1),
                    'expected 0..9'),
}


# ---------------------------------------------------------------- MNIST gzip IDX

def rewrite_gz(path, edit):
    with gzip.open(path, 'rb') as f:
        raw = f.read()
    with gzip.open(path, 'wb') as f:
        f.write(edit(raw))


MNIST_CASES = {
    'truncated gzip': (MNIST_IMGS, truncate, 'truncated or corrupt gzip'),
    'bit-flipped gzip': (MNIST_IMGS, flip_bit, 'damaged'),
    'not gzip': (MNIST_LABELS, random_bytes, 'damaged'),
    'bad magic': (MNIST_IMGS, lambda p: rewrite_gz(p, lambda r: b'\0\0\x04\xd2' + r[4:]),
                  'magic number 2051'),
    'labels as images': (MNIST_IMGS, lambda p: shutil.copy(p.with_name(MNIST_LABELS), p),
                         'a labels file'),
    'size mismatch': (MNIST_IMGS, lambda p: rewrite_gz(p, lambda r: r[:-100]), 'truncated'),
    'count mismatch': (MNIST_LABELS, lambda p: rewrite_gz(
        p, lambda r: r[:4] + (9999).to_bytes(4, 'big') + r[8:-1]), 'disagree in count'),
}


ARRAY_CASES = [('kmnist', get_kmnist_test, case, *spec) for case, spec in KMNIST_CASES.items()] \
    + [('mnist', get_mnist_test, case, *spec) for case, spec in MNIST_CASES.items()]


@pytest.mark.parametrize('folder, loader, case, name, damage, fix', ARRAY_CASES,
                         ids=[f'{c[0]}-{c[2]}' for c in ARRAY_CASES])
def test_damaged_array_file(tmp_path, folder, loader, case, name, damage, fix):
    path = copy_shipped(tmp_path, folder) / name
    damage(path)
    with pytest.raises(DataError) as info:
        loader(tmp_path)
    check_message(info.value, [path], fix)
    check_message(info.value, [path], 'replace')


def test_damaged_shipped_copy_says_reinstall(tmp_path, monkeypatch):
    monkeypatch.setattr('trainerlib.datasets.real.DATA_DIR', tmp_path)
    path = copy_shipped(tmp_path, 'kmnist') / KMNIST_IMGS
    truncate(path)
    with pytest.raises(DataError) as info:
        get_kmnist_test()
    check_message(info.value, [path], 'reinstall trainerlib')


# ---------------------------------------------------------------- image lists and images

def save_png(path, size=(28, 28), mode='L'):
    shape = (size[1], size[0]) + ((3,) if mode == 'RGB' else ())
    pixels = np.random.RandomState(0).randint(0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels, mode).save(path)


def list_file(root, text):
    path = root / 'list.txt'
    path.write_bytes(text if isinstance(text, bytes) else text.encode('utf-8'))
    return path


def images_root(root):
    save_png(root / 'a.png')
    save_png(root / 'rgb.png', mode='RGB')
    save_png(root / 'big.png', size=(32, 32))
    (root / 'notes.png').write_text('not an image\n')
    data = (root / 'a.png').read_bytes()
    (root / 'cut.png').write_bytes(data[:len(data) // 2])
    return root


# (list content, what to load, names in the message, fix); {root} is the image folder.
IMAGE_CASES = {
    'truncated png': ('a.png 0\ncut.png 1\n', [0, 1], ['cut.png', 'list.txt:2'], 'intact copy'),
    'missing image': ('a.png 0\n\nnope.png 1\n', [1], ['nope.png', 'list.txt:3'],
                      'remove line 3'),
    'not an image': ('# comment\nnotes.png 2\n', [0], ['notes.png', 'list.txt:2'],
                     'replace it with a PNG'),
    'latin-1 list': (b'a.png 0\ncaf\xe9.png 1\n', None, ['list.txt:2'], 'save the list as UTF-8'),
    'missing label': ('a.png 0\na.png\n', None, ['list.txt:2'], 'path<TAB>label'),
    'bad label': ('a.png 0\na.png\tcat\n', None, ['list.txt:2'], 'label must be an integer'),
    'empty list': ('# nothing\n\n', None, ['list.txt'], 'path<TAB>label'),
    'mixed mode': ('a.png 0\nrgb.png 1\n', [0, 1], ['a.png', 'rgb.png', '28x28 L', '28x28 RGB',
                                                     'list.txt:1', 'list.txt:2'], 'transform'),
    'mixed size': ('a.png 0\na.png 1\nbig.png 1\n', [0, 1, 2],
                   ['a.png', 'big.png', '32x32 L', 'list.txt:3'], 'resize'),
}


@pytest.mark.parametrize('case', list(IMAGE_CASES))
def test_bad_image_list(tmp_path, case):
    text, load, names, fix = IMAGE_CASES[case]
    root = images_root(tmp_path)
    path = list_file(root, text)
    with pytest.raises(DataError) as info:
        ds = LabeledImageDataset(str(path), root=root)
        assert load is not None, 'the list should have been refused'
        for i in load:
            ds[i]
    check_message(info.value, [path if ':' not in n else n.replace('list.txt', str(path))
                               for n in names], fix)


def test_missing_image_is_also_file_not_found(tmp_path):
    ds = LabeledImageDataset([('a.png', 0)], root=tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        ds[0]
    check_message(info.value, ['a.png', 'pairs[0]', str(tmp_path)], 'root=')


def test_mixed_shapes_named_before_stacking(tmp_path):
    root = images_root(tmp_path)
    ds = LabeledImageDataset([('a.png', 0), ('a.png', 1), ('rgb.png', 2)], root=root)
    with pytest.raises(DataError) as info:
        concat_examples(SerialIterator(ds, 3, shuffle=False).next())
    check_message(info.value, [root / 'a.png', root / 'rgb.png', 'pairs[2]'], 'same_size=False')


def test_transform_output_shapes_are_compared(tmp_path):
    root = images_root(tmp_path)
    to_tensor = lambda im: torch.from_numpy(np.array(im))  # noqa: E731
    ds = LabeledImageDataset([('a.png', 0), ('big.png', 1)], root=root, transform=to_tensor)
    ds[0]
    with pytest.raises(DataError) as info:
        ds[1]
    check_message(info.value, ['(28, 28)', '(32, 32)', root / 'big.png'], 'make the transform')
    loose = LabeledImageDataset([('a.png', 0), ('big.png', 1)], root=root, transform=to_tensor,
                                same_size=False)
    assert [tuple(loose[i][0].shape) for i in range(2)] == [(28, 28), (32, 32)]


def test_bad_pairs_and_missing_list(tmp_path):
    with pytest.raises(DataError) as info:
        LabeledImageDataset([('a.png', 0), ('b.png', 'cat')])
    check_message(info.value, ['pairs[1]', 'cat'], 'integer')
    with pytest.raises(FileNotFoundError) as info:
        LabeledImageDataset(str(tmp_path / 'nope.txt'))
    check_message(info.value, [tmp_path / 'nope.txt'], 'path label')


def test_image_error_through_run_cli(tmp_path, capsys):
    root = images_root(tmp_path)
    ds = LabeledImageDataset(str(list_file(root, 'a.png 0\ncut.png 1\n')), root=root)
    assert run_cli(lambda: len(ds[1])) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: image file ') and err.count('\n') == 1
    assert f'{root / "list.txt"}:2' in err


# ---------------------------------------------------------------- end to end, through a recipe

@pytest.mark.parametrize('dataset, sub, name, damage', [
    ('kmnist-test', 'kmnist', KMNIST_IMGS, flip_bit),
    ('mnist-test', 'mnist', MNIST_LABELS, truncate),
])
def test_recipe_reports_damaged_data(tmp_path, dataset, sub, name, damage):
    path = copy_shipped(tmp_path, sub) / name
    damage(path)
    out = tmp_path / 'out'
    proc = subprocess.run(
        [sys.executable, '-m', 'recipes.classify', '--set', f'dataset={dataset}',
         '--set', f'data.root={tmp_path}', '--out', str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith('error:'), proc.stderr
    assert str(path) in lines[0] and 'replace it' in lines[0]
    assert not out.exists()
