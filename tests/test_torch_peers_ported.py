"""The peers' own tests, ported by import swap: timm's ``tests/test_layers_drop.py`` (timm >= 1.0.23) and
torchvision's ``TestStochasticDepth``/``TestDropBlock`` (``test/test_ops.py``).

Only the imports change (``timm.layers.drop`` -> ``dropkit.torch.timm``, ``torchvision.ops`` ->
``dropkit.torch.torchvision``). Left out: torchvision's ``test_is_leaf_node`` (it needs torchvision's FX
feature extractor), and the torchvision seeds are ``range(3)`` instead of ``range(10)`` to keep the suite
fast. The statistical bounds are the peers' own.
"""

from itertools import product

import pytest

torch = pytest.importorskip("torch")

from dropkit.torch import torchvision as ops  # noqa: E402
from dropkit.torch.timm import DropBlock2d, DropPath, drop_block_2d, drop_path  # noqa: E402


class TestDropBlock2d:
    def test_drop_block_2d_output_shape(self):
        for h, w in [(7, 7), (4, 8), (10, 5), (3, 3)]:
            x = torch.ones((2, 3, h, w))
            result = drop_block_2d(x, drop_prob=0.1, block_size=3)
            assert result.shape == x.shape, f"Shape mismatch for input ({h}, {w})"

    def test_drop_block_2d_no_drop_when_prob_zero(self):
        x = torch.ones((2, 3, 8, 8))
        result = drop_block_2d(x, drop_prob=0.0, block_size=3)
        assert torch.allclose(result, x)

    def test_drop_block_2d_approximate_keep_ratio(self):
        torch.manual_seed(123)
        x = torch.ones((32, 16, 56, 56))
        drop_prob = 0.1
        result = drop_block_2d(x, drop_prob=drop_prob, block_size=7, scale_by_keep=False)
        actual_drop_ratio = (result == 0).sum().item() / result.numel()
        assert abs(actual_drop_ratio - drop_prob) < 0.03, actual_drop_ratio

    def test_drop_block_2d_inplace(self):
        x = torch.ones((2, 3, 8, 8))
        x_clone = x.clone()
        torch.manual_seed(42)
        result = drop_block_2d(x_clone, drop_prob=0.3, block_size=3, inplace=True)
        assert result is x_clone, "Inplace should return the same tensor"

    def test_drop_block_2d_couple_channels_true(self):
        torch.manual_seed(42)
        x = torch.ones((2, 4, 16, 16))
        result = drop_block_2d(x, drop_prob=0.3, block_size=5, couple_channels=True)
        for b in range(x.shape[0]):
            mask_c0 = (result[b, 0] == 0).float()
            for c in range(1, x.shape[1]):
                mask_c = (result[b, c] == 0).float()
                assert torch.allclose(mask_c0, mask_c), f"Channel {c} has different mask than channel 0"

    def test_drop_block_2d_couple_channels_false(self):
        torch.manual_seed(42)
        x = torch.ones((2, 4, 16, 16))
        result = drop_block_2d(x, drop_prob=0.3, block_size=5, couple_channels=False)
        mask_c0 = (result[0, 0] == 0).float()
        mask_c1 = (result[0, 1] == 0).float()
        assert not torch.allclose(mask_c0, mask_c1), "Channels should have independent masks"

    def test_drop_block_2d_with_noise(self):
        torch.manual_seed(42)
        x = torch.ones((2, 3, 16, 16))
        result = drop_block_2d(x, drop_prob=0.3, block_size=5, with_noise=True)
        assert len(torch.unique(result)) > 2, "With noise should produce varied values"

    def test_drop_block_2d_even_block_size(self):
        x = torch.ones((2, 3, 16, 16))
        for block_size in [2, 4, 6]:
            result = drop_block_2d(x, drop_prob=0.1, block_size=block_size)
            assert result.shape == x.shape, f"Shape mismatch for block_size={block_size}"

    def test_drop_block_2d_asymmetric_input(self):
        for h, w in [(8, 16), (16, 8), (7, 14), (14, 7)]:
            x = torch.ones((2, 3, h, w))
            result = drop_block_2d(x, drop_prob=0.1, block_size=5)
            assert result.shape == x.shape, f"Shape mismatch for ({h}, {w})"

    def test_drop_block_2d_scale_by_keep(self):
        torch.manual_seed(42)
        x = torch.ones((2, 3, 16, 16))
        result_scaled = drop_block_2d(x.clone(), drop_prob=0.3, block_size=5, scale_by_keep=True)
        assert result_scaled[result_scaled > 0].min() > 1.0, "Scaled values should be > 1.0"
        torch.manual_seed(42)
        result_unscaled = drop_block_2d(x.clone(), drop_prob=0.3, block_size=5, scale_by_keep=False)
        kept = result_unscaled[result_unscaled > 0]
        assert torch.allclose(kept, torch.ones_like(kept)), "Unscaled values should be 1.0"


class TestDropBlock2dModule:
    def test_deprecated_args_accepted(self):
        module1 = DropBlock2d(drop_prob=0.1, batchwise=True)
        module2 = DropBlock2d(drop_prob=0.1, fast=False)
        module3 = DropBlock2d(drop_prob=0.1, batchwise=False, fast=True)
        assert module1.drop_prob == 0.1
        assert module2.drop_prob == 0.1
        assert module3.drop_prob == 0.1

    def test_unknown_args_warned(self):
        with pytest.warns(UserWarning, match="unexpected keyword argument 'unknown_arg'"):
            DropBlock2d(drop_prob=0.1, unknown_arg=True)

    def test_training_mode(self):
        module = DropBlock2d(drop_prob=0.5, block_size=3)
        x = torch.ones((2, 3, 8, 8))
        module.eval()
        assert torch.allclose(module(x), x), "Should not drop in eval mode"
        module.train()
        torch.manual_seed(42)
        assert not torch.allclose(module(x), x), "Should drop in train mode"

    def test_couple_channels_parameter(self):
        x = torch.ones((2, 4, 16, 16))
        module_coupled = DropBlock2d(drop_prob=0.3, block_size=5, couple_channels=True)
        module_coupled.train()
        torch.manual_seed(42)
        result_coupled = module_coupled(x)
        assert torch.allclose((result_coupled[0, 0] == 0).float(), (result_coupled[0, 1] == 0).float())
        module_uncoupled = DropBlock2d(drop_prob=0.3, block_size=5, couple_channels=False)
        module_uncoupled.train()
        torch.manual_seed(42)
        result_uncoupled = module_uncoupled(x)
        mask_c0 = (result_uncoupled[0, 0] == 0).float()
        assert not torch.allclose(mask_c0, (result_uncoupled[0, 1] == 0).float())


class TestDropPath:
    def test_no_drop_when_prob_zero(self):
        x = torch.ones((4, 8, 16, 16))
        assert torch.allclose(drop_path(x, drop_prob=0.0, training=True), x)

    def test_no_drop_when_not_training(self):
        x = torch.ones((4, 8, 16, 16))
        assert torch.allclose(drop_path(x, drop_prob=0.5, training=False), x)

    def test_drop_path_scaling(self):
        torch.manual_seed(42)
        x = torch.ones((100, 8, 4, 4))
        keep_prob = 0.8
        result = drop_path(x, drop_prob=1 - keep_prob, training=True, scale_by_keep=True)
        kept_mask = result[:, 0, 0, 0] != 0
        if kept_mask.any():
            kept_vals = result[kept_mask, 0, 0, 0]
            assert torch.allclose(kept_vals, torch.full_like(kept_vals, 1.0 / keep_prob), atol=1e-5)

    def test_drop_path_no_scaling(self):
        torch.manual_seed(42)
        x = torch.ones((100, 8, 4, 4))
        result = drop_path(x, drop_prob=0.2, training=True, scale_by_keep=False)
        kept_mask = result[:, 0, 0, 0] != 0
        if kept_mask.any():
            kept_vals = result[kept_mask, 0, 0, 0]
            assert torch.allclose(kept_vals, torch.ones_like(kept_vals))


class TestDropPathModule:
    def test_training_mode(self):
        module = DropPath(drop_prob=0.5)
        x = torch.ones((32, 8, 4, 4))
        module.eval()
        assert torch.allclose(module(x), x), "Should not drop in eval mode"
        module.train()
        torch.manual_seed(42)
        assert (module(x) == 0).any(), "Should drop some paths in train mode"

    def test_extra_repr(self):
        assert "0.123" in DropPath(drop_prob=0.123).extra_repr()


# --- torchvision's test/test_ops.py ------------------------------------------------------------


class TestStochasticDepth:
    @pytest.mark.parametrize("seed", range(3))
    @pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
    @pytest.mark.parametrize("mode", ["batch", "row"])
    def test_stochastic_depth_random(self, seed, mode, p):
        torch.manual_seed(seed)
        stats = pytest.importorskip("scipy.stats")
        batch_size = 5
        x = torch.ones(size=(batch_size, 3, 4, 4))
        layer = ops.StochasticDepth(p=p, mode=mode)
        layer.__repr__()
        trials = 250
        num_samples = 0
        counts = 0
        for _ in range(trials):
            out = layer(x)
            non_zero_count = out.sum(dim=(1, 2, 3)).nonzero().size(0)
            if mode == "batch":
                if non_zero_count == 0:
                    counts += 1
                num_samples += 1
            elif mode == "row":
                counts += batch_size - non_zero_count
                num_samples += batch_size
        p_value = stats.binomtest(counts, num_samples, p=p).pvalue
        assert p_value > 0.01

    @pytest.mark.parametrize("seed", range(3))
    @pytest.mark.parametrize("p", (0, 1))
    @pytest.mark.parametrize("mode", ["batch", "row"])
    def test_stochastic_depth(self, seed, mode, p):
        torch.manual_seed(seed)
        x = torch.ones(size=(5, 3, 4, 4))
        out = ops.StochasticDepth(p=p, mode=mode)(x)
        if p == 0:
            assert out.equal(x)
        elif p == 1:
            assert out.equal(torch.zeros_like(x))


class TestDropBlock:
    @pytest.mark.parametrize("seed", range(3))
    @pytest.mark.parametrize("dim", [2, 3])
    @pytest.mark.parametrize("p", [0, 0.5])
    @pytest.mark.parametrize("block_size", [5, 11])
    @pytest.mark.parametrize("inplace", [True, False])
    def test_drop_block(self, seed, dim, p, block_size, inplace):
        torch.manual_seed(seed)
        batch_size = 5
        channels = 3
        height = 11
        width = height
        depth = height
        if dim == 2:
            x = torch.ones(size=(batch_size, channels, height, width))
            layer = ops.DropBlock2d(p=p, block_size=block_size, inplace=inplace)
            feature_size = height * width
        elif dim == 3:
            x = torch.ones(size=(batch_size, channels, depth, height, width))
            layer = ops.DropBlock3d(p=p, block_size=block_size, inplace=inplace)
            feature_size = depth * height * width
        layer.__repr__()
        out = layer(x)
        if p == 0:
            assert out.equal(x)
        if block_size == height:
            for b, c in product(range(batch_size), range(channels)):
                assert out[b, c].count_nonzero() in (0, feature_size)

    @pytest.mark.parametrize("seed", range(3))
    @pytest.mark.parametrize("dim", [2, 3])
    @pytest.mark.parametrize("p", [0.1, 0.2])
    @pytest.mark.parametrize("block_size", [3])
    @pytest.mark.parametrize("inplace", [False])
    def test_drop_block_random(self, seed, dim, p, block_size, inplace):
        torch.manual_seed(seed)
        batch_size = 5
        channels = 3
        height = 11
        width = height
        depth = height
        if dim == 2:
            x = torch.ones(size=(batch_size, channels, height, width))
            layer = ops.DropBlock2d(p=p, block_size=block_size, inplace=inplace)
        elif dim == 3:
            x = torch.ones(size=(batch_size, channels, depth, height, width))
            layer = ops.DropBlock3d(p=p, block_size=block_size, inplace=inplace)
        trials = 250
        num_samples = 0
        counts = 0
        cell_numel = torch.tensor(x.shape).prod()
        for _ in range(trials):
            with torch.no_grad():
                out = layer(x)
            non_zero_count = out.nonzero().size(0)
            counts += cell_numel - non_zero_count
            num_samples += cell_numel
        assert abs(p - counts / num_samples) / p < 0.15
