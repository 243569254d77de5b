"""The few-row bf16 tile kernel (completion/engine/lean/native.py, kernels/bf16_rows.c): the
product within float32 rounding of an exact one, bias and odd sizes included, and a row's bits
independent of the rows beside it and of the thread count (what lossless verification needs).
On a CPU without AMX the kernel is not used and these tests skip, saying why."""
from __future__ import annotations

import pytest
import torch

from completion.engine.lean import native

pytestmark = pytest.mark.skipif(not native.available(), reason=f"tile kernel not in use: {native.reason()}")


@pytest.mark.parametrize("n,k", [(1000, 896), (37, 64), (130, 4864)])
def test_product_is_exact_up_to_float32_rounding(n, k):
    torch.manual_seed(n)
    w = torch.randn(n, k).bfloat16()
    bias = torch.randn(n)
    x = torch.randn(35, k).bfloat16()     # more rows than one tile holds
    exact = x.double() @ w.double().T + bias.double()
    got = native.rows_mm(x, native.pack_rows(w), n, bias, out_dtype=torch.float32).double()
    assert ((got - exact).abs().max() / exact.abs().max()).item() < 1e-5
    rounded = native.rows_mm(x, native.pack_rows(w), n, bias)
    assert rounded.dtype == torch.bfloat16 and torch.equal(rounded, got.float().bfloat16())


def test_a_rows_bits_do_not_depend_on_its_neighbours_or_threads():
    torch.manual_seed(0)
    n, k = 300, 256
    packed, x, bias = native.pack_rows(torch.randn(n, k).bfloat16()), torch.randn(19, k).bfloat16(), torch.randn(n)
    full = native.rows_mm(x, packed, n, bias)
    for i in range(19):
        assert torch.equal(native.rows_mm(x[i:i + 1], packed, n, bias), full[i:i + 1])
    assert torch.equal(native.rows_mm(x[3:10], packed, n, bias), full[3:10])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(native.rows_mm(x, packed, n, bias), full)
    finally:
        torch.set_num_threads(threads)


def test_shapes_it_cannot_take_are_refused():
    with pytest.raises(ValueError, match="multiple of 32"):
        native.pack_rows(torch.zeros(64, 48, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="bf16"):
        native.pack_rows(torch.zeros(64, 64))


def test_tile_linear_adopts_a_linear_in_place():
    """A drafter's nn.Linear turned TileLinear: same parameters and state-dict keys, the product
    within bf16 rounding of torch's, torch's own path when gradients are wanted or rows are many."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(96, 70, bias=True).to(torch.bfloat16)
    keys, x = set(lin.state_dict()), torch.randn(3, 5, 96, dtype=torch.bfloat16)
    expected = torch.nn.functional.linear(x.float(), lin.weight.float(), lin.bias.float())
    native.TileLinear.adopt(lin)
    assert isinstance(lin, native.TileLinear) and set(lin.state_dict()) == keys
    with torch.no_grad():
        got = lin(x)
    assert got.shape == (3, 5, 70) and ((got.float() - expected).abs().max() / expected.abs().max()) < 1e-2
    assert lin(x).requires_grad                      # grad mode: torch's linear, differentiable
    with torch.no_grad():
        many = torch.randn(native.FEW_ROWS + 1, 96, dtype=torch.bfloat16)
        assert torch.equal(lin(many), torch.nn.functional.linear(many, lin.weight, lin.bias))
