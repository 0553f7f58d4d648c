"""The tolerance helpers (tests/ulps.py) on values whose steps are known by hand."""
import pytest
import torch

from ulps import forward_error, gamma, probable, steps_apart, ulp, unit_roundoff


def test_steps_apart_counts_representable_values():
    one = torch.tensor([1.0], dtype=torch.bfloat16)
    up = torch.nextafter(one.float(), torch.tensor([2.0])).to(torch.bfloat16)  # rounds to 1
    assert torch.equal(up, one)
    nxt = torch.tensor([1.0078125], dtype=torch.bfloat16)  # 1 + 2^-7: bf16's next value
    below = torch.tensor([0.99609375], dtype=torch.bfloat16)  # 1 - 2^-8: its previous one
    assert int(steps_apart(one, nxt)) == 1 and int(steps_apart(one, below)) == 1
    assert int(steps_apart(nxt, below)) == 2
    # across zero: -0 and +0 are one value; the smallest subnormals either side are 2 apart
    zeros = torch.tensor([0.0, -0.0], dtype=torch.bfloat16)
    assert int(steps_apart(zeros[:1], zeros[1:])) == 0
    tiny = torch.tensor([2.0 ** -133], dtype=torch.bfloat16)
    assert int(steps_apart(tiny, -tiny)) == 2
    f = torch.tensor([1.0, -3.0])
    g = torch.nextafter(torch.nextafter(f, f * 2), f * 2)
    assert steps_apart(f, g).tolist() == [2, 2]
    with pytest.raises(AssertionError, match="NaN"):
        steps_apart(torch.tensor([float("nan")]), torch.tensor([1.0]))


def test_ulp_is_the_spacing_in_the_binade():
    x = torch.tensor([1.0, 1.99, 0.75, -0.02, 0.0], dtype=torch.bfloat16)
    assert ulp(x).tolist() == [2.0 ** -7, 2.0 ** -7, 2.0 ** -8, 2.0 ** -13, 2.0 ** -133]
    assert ulp(torch.tensor([1.0, 0.0])).tolist() == [2.0 ** -23, 2.0 ** -149]
    # the next value up is exactly one step away
    v = torch.tensor([3.0, 1e-3, 7e5])
    assert torch.equal(torch.nextafter(v, v * 2).double() - v.double(), ulp(v))


def test_the_bounds():
    assert unit_roundoff(torch.float32) == 2.0 ** -24 and unit_roundoff(torch.bfloat16) == 2.0 ** -8
    assert gamma(1) == pytest.approx(2.0 ** -24) and gamma(1000) > 1000 * 2.0 ** -24
    assert probable(768) == pytest.approx(6 * 768 ** 0.5 * 2.0 ** -24)
    cfg = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30}
    assert forward_error(cfg, 300) == pytest.approx(61 * probable(1536))
    assert forward_error(cfg, 4000) == pytest.approx(61 * probable(4000))
