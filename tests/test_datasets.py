"""Tests of trainerlib.datasets: containers, splits, image files and the real-data loaders."""
import gzip
import struct
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from trainerlib.datasets import (DatasetMixin, LabeledImageDataset, SubDataset, TransformDataset,
                                 TupleDataset, get_dataset, get_digits, get_kmnist_test,
                                 get_mnist_test, get_torchvision, kmnist_classmap, split_dataset,
                                 split_dataset_random)

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


class Squares(DatasetMixin):
    def __len__(self):
        return 5

    def get_example(self, i):
        return i * i


# ---------------------------------------------------------------- DatasetMixin / TupleDataset

@pytest.mark.parametrize('index, expected', [
    (2, 4), (-1, 16), (np.int64(3), 9), (torch.tensor(1), 1), (np.array(-2), 9),
    (slice(1, 4), [1, 4, 9]), (slice(None, None, -2), [16, 4, 0]), (slice(7, 9), []),
    ([0, -1, 2], [0, 16, 4]), (np.array([4, 0]), [16, 0]), (torch.tensor([3, 3]), [9, 9]),
])
def test_mixin_indexing(index, expected):
    assert Squares()[index] == expected


@pytest.mark.parametrize('index', [5, -6, [0, 5]])
def test_mixin_out_of_range(index):
    with pytest.raises(IndexError):
        Squares()[index]


@pytest.mark.parametrize('index', [1.0, torch.tensor(1.5), [0, 'a']])
def test_mixin_bad_index_type(index):
    with pytest.raises(TypeError, match='integer'):
        Squares()[index]


def test_works_with_torch_dataloader():
    ds = TupleDataset(torch.arange(10.0), np.arange(10))
    batches = list(torch.utils.data.DataLoader(ds, batch_size=4))
    assert [b[0].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batches[0][1].dtype == torch.int64


def test_tuple_dataset_items_and_slices():
    ds = TupleDataset([10, 11, 12], ['a', 'b', 'c'])
    assert len(ds) == 3
    assert ds[1] == (11, 'b') and ds[-1] == (12, 'c')
    assert ds[0:2] == [(10, 'a'), (11, 'b')]
    assert ds[[2, 0]] == [(12, 'c'), (10, 'a')]
    assert not ds.supports_batch
    with pytest.raises(TypeError, match='get_batch'):
        ds.get_batch(torch.tensor([0]))


def test_tuple_dataset_length_mismatch_and_empty():
    with pytest.raises(ValueError, match=r'\[3, 2\]'):
        TupleDataset(torch.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match='at least one column'):
        TupleDataset()


def _stack(items):
    return torch.stack(items) if isinstance(items[0], torch.Tensor) else np.stack(items)


@pytest.mark.parametrize('make_index', [
    lambda idx: torch.as_tensor(idx), lambda idx: np.asarray(idx, dtype=np.int64)])
def test_get_batch_equals_stacked_examples(make_index):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 3, 4, generator=g)
    y = torch.randint(0, 10, (50,), generator=g)
    z = np.random.RandomState(0).rand(50, 2).astype(np.float32)
    ds = TupleDataset(x, y, z)
    assert ds.supports_batch
    idx = torch.randint(0, 50, (17,), generator=g).numpy()
    batch = ds.get_batch(make_index(idx))
    examples = [ds[int(i)] for i in idx]
    for col, got in enumerate(batch):
        assert type(got) is type(ds.datasets[col])
        expected = _stack([e[col] for e in examples])
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    with pytest.raises(IndexError):
        ds.get_batch(torch.tensor([0, 50]))


# ---------------------------------------------------------------- TransformDataset / SubDataset

def test_transform_dataset_is_lazy():
    calls = []
    ds = TransformDataset(Squares(), lambda v: calls.append(v) or -v)
    assert len(ds) == 5 and calls == []
    assert ds[3] == -9 and ds[1:3] == [-1, -4] and calls == [9, 1, 4]


def test_split_dataset_with_order():
    base = TupleDataset(torch.arange(6) * 10)
    a, b = split_dataset(base, 2, order=[5, 4, 3, 2, 1, 0])
    assert [int(e[0]) for e in a] == [50, 40] and [int(e[0]) for e in b] == [30, 20, 10, 0]
    assert b[-1][0] == 0
    first, second = split_dataset(Squares(), 5)
    assert len(first) == 5 and len(second) == 0


@pytest.mark.parametrize('split_at, error', [(-1, ValueError), (7, ValueError), (1.5, TypeError)])
def test_split_dataset_bad_split_at(split_at, error):
    with pytest.raises(error, match='split_at'):
        split_dataset(TupleDataset(torch.arange(6)), split_at)


def test_sub_dataset_bad_args():
    with pytest.raises(ValueError, match='start'):
        SubDataset(Squares(), 3, 2)
    with pytest.raises(ValueError, match='order'):
        SubDataset(Squares(), 0, 2, order=[0, 1])
    with pytest.raises(TypeError, match='get_batch'):
        SubDataset(Squares(), 0, 2).get_batch([0])


def _values(ds):
    return [int(ds[i][0]) for i in range(len(ds))]


def test_split_dataset_random_partition_and_fast_path():
    x, y = torch.arange(100) * 2, torch.arange(100).numpy()
    train, val = split_dataset_random(TupleDataset(x, y), 70, seed=3)
    assert len(train) == 70 and len(val) == 30
    assert sorted(_values(train) + _values(val)) == list(range(0, 200, 2))
    assert _values(train) != sorted(_values(train))
    assert train.supports_batch
    idx = torch.tensor([0, 69, 5, 68])
    bx, by = train.get_batch(idx)
    assert bx.tolist() == [int(train[int(i)][0]) for i in idx]
    assert by.tolist() == [int(train[int(i)][1]) for i in idx]
    nested = SubDataset(train, 10, 20)  # a view of a view keeps the fast path
    values = _values(train)
    assert nested.get_batch(torch.tensor([0, 9]))[0].tolist() == [values[10], values[19]]
    assert nested.get_batch(slice(2, 5))[0].tolist() == values[12:15]
    head, _ = split_dataset(TupleDataset(x, y), 50)      # unpermuted: a slice stays a view
    view = head.get_batch(slice(10, 20))[0]
    assert view.tolist() == x[10:20].tolist() and view.data_ptr() == x[10:].data_ptr()


def test_split_dataset_random_is_repeatable():
    base = TupleDataset(torch.arange(40))
    assert _values(split_dataset_random(base, 10, seed=5)[0]) == \
        _values(split_dataset_random(base, 10, seed=5)[0])
    assert _values(split_dataset_random(base, 10, seed=5)[0]) != \
        _values(split_dataset_random(base, 10, seed=6)[0])
    torch.manual_seed(123)
    first = _values(split_dataset_random(base, 10)[0])
    torch.manual_seed(123)
    assert _values(split_dataset_random(base, 10)[0]) == first


# ---------------------------------------------------------------- LabeledImageDataset

@pytest.fixture
def image_dir(tmp_path):
    rng = np.random.RandomState(0)
    gray = rng.randint(0, 256, (4, 5), dtype=np.uint8)
    rgb = rng.randint(0, 256, (4, 5, 3), dtype=np.uint8)
    Image.fromarray(gray, 'L').save(tmp_path / 'gray.png')
    (tmp_path / 'sub dir').mkdir()
    Image.fromarray(rgb, 'RGB').save(tmp_path / 'sub dir' / 'rgb.png')
    return tmp_path, gray, rgb


def _check_images(ds, gray, rgb):
    assert len(ds) == 2
    x0, t0 = ds[0]
    x1, t1 = ds[1]
    assert x0.shape == (1, 4, 5) and x1.shape == (3, 4, 5) and x0.dtype == torch.float32
    torch.testing.assert_close(x0[0], torch.from_numpy(gray) / 255.0)
    torch.testing.assert_close(x1, torch.from_numpy(rgb).permute(2, 0, 1) / 255.0)
    assert (t0.item(), t1.item()) == (3, 7) and t0.dtype == torch.int64


def test_labeled_image_dataset_from_list(image_dir):
    root, gray, rgb = image_dir
    # gray and RGB in one dataset: allowed only with same_size=False (see test_data_errors.py)
    ds = LabeledImageDataset([('gray.png', 3), ('sub dir/rgb.png', 7)], root=root,
                             same_size=False)
    _check_images(ds, gray, rgb)


def test_labeled_image_dataset_from_tsv_file(image_dir):
    root, gray, rgb = image_dir
    (root / 'list.tsv').write_text('gray.png 3\n\nsub dir/rgb.png\t7\n')
    _check_images(LabeledImageDataset(str(root / 'list.tsv'), root=root, same_size=False),
                  gray, rgb)


def test_labeled_image_dataset_transform_gets_pil_image(image_dir):
    root, gray, _ = image_dir
    ds = LabeledImageDataset([('gray.png', 1)], root=root,
                             transform=lambda im: (type(im).__name__, im.size, np.asarray(im)))
    (name, size, array), label = ds[0]
    assert size == (5, 4) and label.item() == 1 and 'Image' in name
    np.testing.assert_array_equal(array, gray)


def test_labeled_image_dataset_missing_file(tmp_path):
    ds = LabeledImageDataset([('nope.png', 0)], root=tmp_path)
    with pytest.raises(FileNotFoundError, match='nope.png') as info:
        ds[0]
    assert str(tmp_path) in str(info.value)


# ---------------------------------------------------------------- real data

def _check_images_tensor(ds, n, shape):
    x, y = ds.datasets
    assert len(ds) == n and x.shape == (n, *shape) and x.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.int64
    assert x.min() == 0.0 and x.max() == 1.0
    return x, y


def test_digits():
    x, y = _check_images_tensor(get_digits(), 1797, (1, 8, 8))
    assert sorted(set(y.tolist())) == list(range(10))
    assert torch.equal(get_digits(flatten=True).datasets[0], x.reshape(1797, 64))


def test_mnist_test():
    ds = get_mnist_test()
    x, y = _check_images_tensor(ds, 10000, (1, 28, 28))
    assert torch.bincount(y).tolist() == MNIST_TEST_COUNTS
    assert abs(x.mean().item() * 255 - 33.79) < 0.01
    assert get_dataset('mnist-test', flatten=True).datasets[0].shape == (10000, 784)


def test_kmnist_test_and_classmap():
    x, y = _check_images_tensor(get_kmnist_test(), 10000, (1, 28, 28))
    assert torch.bincount(y).tolist() == [1000] * 10
    classes = kmnist_classmap()
    assert len(classes) == 10 and classes[0] == 'お' and classes[9] == 'を'


def _write_idx(path, magic, array):
    header = struct.pack(f'>I{array.ndim}I', magic, *array.shape)
    with gzip.open(path, 'wb') as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize('images_magic, labels_magic, match', [
    (1234, 2049, 'magic number 2051'), (2051, 2051, 'magic number 2049')])
def test_mnist_bad_magic_names_the_file(tmp_path, images_magic, labels_magic, match):
    (tmp_path / 'mnist').mkdir()
    _write_idx(tmp_path / 'mnist' / 't10k-images-idx3-ubyte.gz', images_magic, np.zeros((2, 3, 3)))
    _write_idx(tmp_path / 'mnist' / 't10k-labels-idx1-ubyte.gz', labels_magic, np.zeros(2))
    with pytest.raises(ValueError, match=match) as info:
        get_mnist_test(tmp_path)
    assert 't10k-' in str(info.value) and str(tmp_path) in str(info.value)


def test_mnist_truncated_and_missing(tmp_path):
    data = struct.pack('>4I', 2051, 2, 3, 3) + bytes(10)
    with gzip.open(tmp_path / 't10k-images-idx3-ubyte.gz', 'wb') as f:
        f.write(data)
    _write_idx(tmp_path / 't10k-labels-idx1-ubyte.gz', 2049, np.zeros(2))
    with pytest.raises(ValueError, match='truncated'):
        get_mnist_test(tmp_path)
    with pytest.raises(FileNotFoundError, match='kmnist-test-imgs.npz'):
        get_kmnist_test(tmp_path)


def test_torchvision_missing_files_gives_clear_error(tmp_path):
    with pytest.raises((FileNotFoundError, ImportError), match='download=True') as info:
        get_torchvision('MNIST', tmp_path, download=False)
    assert 'mnist-test' in str(info.value)


@pytest.mark.parametrize('name, data, expected', [
    ('CIFAR10', np.arange(2 * 2 * 3 * 3, dtype=np.uint8).reshape(2, 2, 3, 3),
     lambda d: torch.from_numpy(d).permute(0, 3, 1, 2)),
    ('EMNIST', torch.arange(2 * 2 * 3, dtype=torch.uint8).reshape(2, 2, 3),
     lambda d: d.transpose(1, 2).unsqueeze(1)),
    ('FashionMNIST', torch.arange(2 * 2 * 3, dtype=torch.uint8).reshape(2, 2, 3),
     lambda d: d.unsqueeze(1)),
])
def test_torchvision_conversion(monkeypatch, name, data, expected):
    seen = {}

    class Fake:
        def __init__(self, root, train, download, **kw):
            seen.update(kw)
            self.data, self.targets = data, [4, 2]

    fake_datasets = types.SimpleNamespace(**{name: Fake})
    monkeypatch.setitem(sys.modules, 'torchvision', types.SimpleNamespace(datasets=fake_datasets))
    monkeypatch.setitem(sys.modules, 'torchvision.datasets', fake_datasets)
    x, y = get_torchvision(name, 'unused').datasets
    torch.testing.assert_close(x, expected(data).float() / 255)
    assert y.tolist() == [4, 2] and y.dtype == torch.int64
    assert seen == ({'split': 'balanced'} if name == 'EMNIST' else {})


def test_torchvision_mnist_reads_idx_files(tmp_path):
    pytest.importorskip('torchvision')
    raw = tmp_path / 'MNIST' / 'raw'
    raw.mkdir(parents=True)
    images = np.random.RandomState(0).randint(0, 256, (3, 28, 28))
    for prefix in ('train', 't10k'):
        for kind, magic, array in (('images-idx3', 2051, images),
                                   ('labels-idx1', 2049, np.arange(3))):
            path = raw / f'{prefix}-{kind}-ubyte'
            _write_idx(str(path) + '.gz', magic, array)
            path.write_bytes(gzip.open(str(path) + '.gz').read())
    x, y = get_dataset('mnist', root=tmp_path, train=False).datasets
    torch.testing.assert_close(x, torch.from_numpy(images).float().unsqueeze(1) / 255)
    assert y.tolist() == [0, 1, 2]


def test_get_dataset_names():
    assert len(get_dataset('digits')) == 1797
    assert len(get_dataset('KMNIST_TEST')) == 10000
    with pytest.raises(ValueError, match='digits.*mnist-test.*cifar10'):
        get_dataset('imagenet')
    with pytest.raises(ValueError, match='root'):
        get_dataset('cifar10')
