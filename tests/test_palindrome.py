from __future__ import annotations

import pytest
import torch

from rnnkit.data.palindrome import PalindromeConfig, PalindromeTask, encode_digits, palindrome_digits


@pytest.mark.parametrize("length", [2, 3, 4, 5, 20, 35])
def test_palindromes_read_the_same_backwards(length):
    digits = palindrome_digits(256, length, torch.Generator().manual_seed(0))
    assert digits.shape == (256, length)
    assert torch.equal(digits, digits.flip(1))
    assert digits.min() >= 0 and digits.max() <= 9


def test_first_half_is_uniform_with_leading_zeros():
    digits = palindrome_digits(20_000, 7, torch.Generator().manual_seed(1))
    counts = torch.bincount(digits[:, 0], minlength=10).float() / 20_000
    assert counts[0] > 0.08  # leading zeros allowed
    assert torch.all((counts - 0.1).abs() < 0.01)


def test_batches_are_fresh_and_seeded():
    task_a = PalindromeTask(PalindromeConfig(length=9), torch.device("cpu"), seed=3)
    task_b = PalindromeTask(PalindromeConfig(length=9), torch.device("cpu"), seed=3)
    x1, y1 = task_a.train_batch(16)
    x2, _ = task_a.train_batch(16)
    assert not torch.equal(x1, x2)
    x1b, y1b = task_b.train_batch(16)
    assert torch.equal(x1, x1b) and torch.equal(y1, y1b)


def test_inputs_and_target():
    task = PalindromeTask(PalindromeConfig(length=6), torch.device("cpu"), seed=0)
    x, y = task.train_batch(8)
    assert x.shape == (8, 5, 10)
    assert torch.equal(x[:, 0].argmax(1), y)  # the target is the first digit
    scalar = PalindromeTask(PalindromeConfig(length=6, input="scalar"), torch.device("cpu"), seed=0)
    xs, ys = scalar.train_batch(8)
    assert xs.shape == (8, 5, 1) and torch.equal(xs[:, 0, 0].long(), ys)
    assert scalar.dims == {"input_size": 1, "num_classes": 10}


def test_encode_one_hot():
    enc = encode_digits(torch.tensor([[3, 0]]), "onehot")
    assert enc.shape == (1, 2, 10) and enc[0, 0, 3] == 1 and enc.sum() == 2
