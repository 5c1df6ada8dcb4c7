"""Smaller versions of a dataset by name (NAME@SIDE[:N]): the downsampling against block means computed by
hand, the class-balanced first N against a loop over the file, and bad specs refused."""
import numpy as np
import pytest

import data


def test_downsampling_is_the_mean_of_each_block_rounded():
    img = np.arange(16, dtype=np.uint8).reshape(1, 1, 4, 4)  # rows 0..3, 4..7, 8..11, 12..15
    # blocks: (0,1,4,5) -> 2.5, (2,3,6,7) -> 4.5, (8,9,12,13) -> 10.5, (10,11,14,15) -> 12.5; numpy rounds half to even
    assert data.downsample(img, 2)[0, 0].tolist() == [[2, 4], [10, 12]]
    ds = data.load_dataset("digits")
    small = data.downsample(ds.images, 4)
    i = 123
    by_hand = [[round(float(ds.images[i, 0, 2 * r:2 * r + 2, 2 * c:2 * c + 2].mean())) for c in range(4)] for r in range(4)]
    assert small.shape == (len(ds), 1, 4, 4) and small[i, 0].tolist() == by_hand
    assert np.array_equal(data.downsample(ds.images, 8), ds.images)


def test_first_n_take_equal_shares_of_each_class_in_file_order(tmp_path):
    ds = data.load_dataset("digits")
    order = np.argsort(ds.labels, kind="stable")  # a file sorted by class, as ../shared/data's CIFAR-10 is
    np.savez(tmp_path / "sorted.npz", images=ds.images[order], labels=ds.labels[order], corrupted=np.array([0, 1, 500]))
    small = data.load_dataset(f"npz:{tmp_path / 'sorted.npz'}@4:25")
    expected = []
    for c in range(10):  # 25 = 3 each of classes 0-4, 2 each of 5-9, the first of each class in the file
        expected += list(np.flatnonzero(ds.labels[order] == c)[:3 if c < 5 else 2])
    expected = np.sort(expected)
    assert np.bincount(small.labels).tolist() == [3] * 5 + [2] * 5
    assert np.array_equal(small.images, data.downsample(ds.images[order][expected], 4))
    assert small.corrupted.tolist() == [0, 1]  # the file's known-bad images 0 and 1 are kept (now images 0 and 1)
    assert small.name.endswith("@4:25")
    # planted faults apply to the smaller set, seeded as ever
    a = data.load_dataset(f"npz:{tmp_path / 'sorted.npz'}@4:25", corrupt=0.2, fault="blur")
    b = data.load_dataset(f"npz:{tmp_path / 'sorted.npz'}@4:25", corrupt=0.2, fault="blur")
    assert np.array_equal(a.images, b.images) and len(a.corrupted) == 2 + 5


@pytest.mark.parametrize("spec, words", [("digits@3", "power of two"), ("digits@16", "made smaller, not larger"),
                                         ("digits@4:5000", "fewer than the 5000"), ("digits@4:0", "positive number")])
def test_bad_specs_are_refused(spec, words):
    with pytest.raises(data.DataError, match=words):
        data.load_dataset(spec)
