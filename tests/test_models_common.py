"""The shared model helpers: one parameter counter, one Glorot init, one unwrapper."""
import torch
from torch import nn

from facelm.models.common import count_params, glorot_init_, unwrap


def test_count_params_counts_trainable_only():
    m = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2, bias=False))
    assert count_params(m) == 3 * 4 + 4 + 4 * 2
    m[0].weight.requires_grad_(False)
    assert count_params(m) == 4 + 4 * 2


def test_glorot_init_is_seeded_bounded_and_zeroes_biases():
    def make(seed):
        return glorot_init_(nn.Sequential(nn.Conv2d(2, 5, 3), nn.ELU(), nn.Linear(6, 7),
                                          nn.Linear(7, 1, bias=False)), seed)
    a, b, c = make(0), make(0), make(1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a[2].weight, c[2].weight)
    assert torch.count_nonzero(a[0].bias) == 0 and torch.count_nonzero(a[2].bias) == 0
    bound = (6 / (6 + 7)) ** 0.5  # Glorot: sqrt(6 / (fan_in + fan_out))
    assert 0.8 * bound < a[2].weight.abs().max() <= bound
    # the global RNG is not consumed (module construction itself does consume it)
    m = nn.Linear(3, 3)
    state = torch.get_rng_state()
    glorot_init_(m, 3)
    assert torch.equal(state, torch.get_rng_state())


class _Wrap(nn.Module):  # stands in for DistributedDataParallel's `.module`
    def __init__(self, m):
        super().__init__()
        self.module = m


class _Compiled(nn.Module):  # stands in for torch.compile's OptimizedModule
    def __init__(self, m):
        super().__init__()
        self._orig_mod = m


def test_unwrap_strips_nested_wrappers():
    inner = nn.Linear(2, 2)
    assert unwrap(_Wrap(_Compiled(_Wrap(inner)))) is inner
    assert unwrap(inner) is inner
