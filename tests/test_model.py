"""Tests for napari_unet.model.UNet."""

from __future__ import annotations

import pytest
import torch

from napari_unet.model import UNet


def _simulate_valid(n: int, depth: int) -> int | None:
    """Brute-force layer arithmetic of the valid U-Net; None if impossible."""
    for _ in range(depth - 1):
        n -= 4
        if n <= 0 or n % 2:
            return None
        n //= 2
    n -= 4
    if n <= 0:
        return None
    for _ in range(depth - 1):
        n = 2 * n - 4
        if n <= 0:
            return None
    return n


def test_paper_parameter_count_and_size():
    with torch.device("meta"):
        net = UNet()
    assert net.n_parameters() == 31_030_658
    assert net.output_size(572) == 388
    assert net.output_size((572, 572)) == (388, 388)
    assert net.context == 184
    assert net.size_multiple == 16
    assert net.valid_input_size(572) == 572
    assert net.valid_input_size(573) == 588


def test_paper_preset_is_defaults():
    with torch.device("meta"):
        net = UNet.preset("paper", n_classes=3, in_channels=2)
    assert net.config == {**UNet().config, "n_classes": 3, "in_channels": 2}


@pytest.mark.parametrize("depth", [2, 3, 4, 5])
def test_output_size_formula_matches_brute_force(depth):
    with torch.device("meta"):
        net = UNet(depth=depth, base_channels=2)
    for n in range(1, 260):
        expected = _simulate_valid(n, depth)
        if expected is None:
            with pytest.raises(ValueError, match="nearest valid sizes"):
                net.output_size(n)
        else:
            assert net.output_size(n) == expected
        v = net.valid_input_size(n)
        assert v >= n and _simulate_valid(v, depth) is not None
        assert all(_simulate_valid(k, depth) is None for k in range(n, v))
    assert net.context == 12 * 2 ** (depth - 1) - 8


@pytest.mark.parametrize("depth", [2, 3, 4, 5])
def test_valid_forward_matches_output_size(depth):
    net = UNet(depth=depth, base_channels=2).eval()
    first = net.valid_input_size(1)
    sizes = [first, first + net.size_multiple, first + 3 * net.size_multiple]
    with torch.no_grad():
        for h in sizes[:2]:
            for w in sizes[1:]:
                out = net(torch.zeros(1, 1, h, w))
                assert tuple(out.shape) == (1, 2, *net.output_size((h, w)))
                assert h - out.shape[-2] == net.context


def test_small_net_several_sizes_and_paddings():
    for padding in ("valid", "same"):
        net = UNet(depth=3, base_channels=4, padding=padding, n_classes=3).eval()
        with torch.no_grad():
            for n in (44, 52, 64, 76):
                if padding == "same" and n % 4:
                    continue
                out = net(torch.randn(2, 1, n, n))
                assert out.shape == (2, 3, net.output_size(n), net.output_size(n))


def test_same_padding_keeps_size_and_rejects_bad_sizes():
    net = UNet(depth=4, base_channels=4, padding="same").eval()
    assert net.size_multiple == 8
    with torch.no_grad():
        out = net(torch.randn(1, 1, 40, 24))
    assert out.shape[-2:] == (40, 24)
    assert net.output_size((40, 24)) == (40, 24)
    with pytest.raises(ValueError, match="32 or 40"):
        net.output_size(37)
    with pytest.raises(ValueError, match="width"):
        net.output_size((40, 30))
    with pytest.raises(ValueError, match="multiple of 8"):
        net(torch.randn(1, 1, 40, 30))
    assert net.valid_input_size(37) == 40
    assert net.valid_input_size((1, 17)) == (8, 24)
    assert net.context % 2 == 0 and net.context % 8 == 0
    assert net.context >= (net.receptive_field - 1) // 2


def test_impossible_valid_size_names_neighbours():
    with torch.device("meta"):
        net = UNet()
    with pytest.raises(ValueError, match="492 or 508"):
        net.output_size(500)
    with pytest.raises(ValueError, match="188"):
        net.output_size(100)
    with pytest.raises(ValueError):
        net.output_size(0)
    with pytest.raises(TypeError):
        net.output_size(572.0)
    with pytest.raises(ValueError):
        net.output_size((572, 572, 572))


@pytest.mark.parametrize("norm", [None, "batch", "instance", "group"])
def test_norms_and_dropout_run(norm):
    net = UNet(depth=3, base_channels=6, padding="same", norm=norm, dropout=0.3)
    x = torch.randn(2, 1, 32, 32)
    out = net.train()(x)
    out.sum().backward()
    assert out.shape == (2, 2, 32, 32)
    assert all(p.grad is not None for p in net.parameters())
    net.eval()
    with torch.no_grad():
        a, b = net(x), net(x)
    assert torch.equal(a, b)  # dropout off in eval
    if norm is not None:
        convs = [
            m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
        ]
        assert all(c.bias is None for c in convs)
    if norm == "group":
        gn = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
        assert gn and all(m.num_channels % m.num_groups == 0 for m in gn)
        assert {m.num_groups for m in gn} == {6, 8}  # 6, 12, 24 channels


def test_dropout_at_bottom():
    net = UNet(depth=3, base_channels=4, dropout=0.5)
    assert isinstance(net.drop, torch.nn.Dropout2d)
    assert sum(isinstance(m, torch.nn.Dropout2d) for m in net.modules()) == 1
    assert not any(
        isinstance(m, torch.nn.Dropout2d) for m in UNet(depth=3, base_channels=4).modules()
    )


def test_config_round_trip():
    net = UNet(
        in_channels=2,
        n_classes=3,
        depth=3,
        base_channels=5,
        padding="same",
        norm="group",
        dropout=0.1,
    )
    again = UNet(**net.config)
    assert again.config == net.config
    assert again.load_state_dict(net.state_dict()) is not None
    assert UNet(norm="none", padding="SAME").config["norm"] is None


def test_small_preset():
    net = UNet.preset("small", n_classes=3)
    assert net.config == {
        "in_channels": 1,
        "n_classes": 3,
        "depth": 4,
        "base_channels": 16,
        "padding": "same",
        "norm": "batch",
        "dropout": 0.0,
    }
    assert net.context == 48
    with pytest.raises(ValueError, match="preset"):
        UNet.preset("huge")


def test_channels_last_forward_matches():
    net = UNet(depth=3, base_channels=4, padding="valid").eval()
    x = torch.randn(2, 1, 60, 60)
    with torch.no_grad():
        ref = net(x)
        out = net.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_forward_rejects_wrong_channels():
    net = UNet(depth=2, base_channels=2)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        net(torch.zeros(1, 2, 36, 36))
    with pytest.raises(ValueError):
        net(torch.zeros(36, 36))


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"in_channels": 0}, ValueError),
        ({"in_channels": 1.5}, TypeError),
        ({"n_classes": 0}, ValueError),
        ({"n_classes": True}, TypeError),
        ({"depth": 0}, ValueError),
        ({"depth": 11}, ValueError),
        ({"base_channels": 0}, ValueError),
        ({"padding": "reflect"}, ValueError),
        ({"padding": 1}, ValueError),
        ({"norm": "layer"}, ValueError),
        ({"dropout": 1.0}, ValueError),
        ({"dropout": -0.1}, ValueError),
        ({"dropout": "0.5"}, TypeError),
    ],
)
def test_invalid_arguments(kwargs, exc):
    with pytest.raises(exc):
        UNet(**kwargs)
