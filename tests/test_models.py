import pytest
import torch

from tinydiffusion.errors import UsageError
from tinydiffusion.models import PRESETS, ModelConfig, build_model, count_parameters, preset


@pytest.mark.parametrize("size", [8, 16, 24])
@pytest.mark.parametrize("width", [0, 5])
def test_unet_output_shape_for_several_sizes_with_and_without_context(size, width):
    net = build_model(ModelConfig(image_size=size, context_width=width, base=8, attention=(4,) if size <= 16 else ()))
    x = torch.randn(2, 3, size, size)
    ctx = torch.randn(2, width) if width else None
    assert net(x, torch.tensor([0, 499]), ctx).shape == x.shape
    assert net(x, torch.tensor([3, 4]), None).shape == x.shape


@pytest.mark.parametrize("size", [8, 16, 32])
def test_course_network_output_shape(size):
    net = build_model(preset("course", image_size=size, context_width=5, base=16))
    x = torch.randn(3, 3, size, size)
    assert net(x, torch.tensor([0, 10, 499]), torch.eye(5)[:3]).shape == x.shape
    assert net(x, torch.tensor([0, 10, 499]), None).shape == x.shape


def test_course_network_creates_no_layer_in_forward():
    net = build_model(preset("course", image_size=8, base=8))
    before = {id(p) for p in net.parameters()}
    net(torch.randn(2, 3, 8, 8), torch.tensor([1, 2]), torch.eye(5)[:2])
    assert {id(p) for p in net.parameters()} == before
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


def test_fresh_unet_predicts_zero_noise_and_context_changes_output():
    net = build_model(ModelConfig(image_size=8, context_width=3, base=8))
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([5, 5])
    assert torch.count_nonzero(net(x, t, torch.eye(3)[:2])) == 0  # zero-initialised output conv
    torch.nn.init.normal_(net.out.weight)
    a, b = net(x[:1], t[:1], torch.eye(3)[:1]), net(x[:1], t[:1], torch.eye(3)[1:2])
    assert not torch.allclose(a, b)
    assert torch.allclose(net(x[:1], t[:1], None), net(x[:1], t[:1], torch.zeros(1, 3)))  # None is the zero context


def test_outputs_do_not_depend_on_the_rest_of_the_batch():
    net = build_model(preset("small", image_size=8, context_width=2)).eval()
    torch.nn.init.normal_(net.out.weight)
    x, t, c = torch.randn(4, 3, 8, 8), torch.tensor([1, 2, 3, 4]), torch.randn(4, 2)
    assert torch.allclose(net(x, t, c)[1:2], net(x[1:2], t[1:2], c[1:2]), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("bad", [{"image_size": 10}, {"image_size": 6}, {"attention": (16,)}, {"arch": "resnet"}])
def test_bad_model_settings_are_named(bad):
    key = next(iter(bad))
    with pytest.raises(UsageError, match=key):
        ModelConfig(**bad)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(UsageError, match="tiny, small, base, course"):
        preset("huge")


def test_presets_build_and_config_round_trips():
    for name in PRESETS:
        config = preset(name, image_size=16)
        assert ModelConfig.from_dict(config.to_dict()) == config
        assert count_parameters(build_model(config)) > 10_000
