import pytest
import torch

from tinydiffusion.errors import UsageError
from tinydiffusion.core.loss import diffusion_loss, min_snr_weight
from tinydiffusion.core.schedule import Schedule


def _point_mass_predictor(schedule, c, prediction):
    """Knows the data is the constant image c, so it can give the exact target for each prediction type."""

    def model(x_t, t, context=None):
        ab = schedule.alpha_bar[t].float().view(-1, 1, 1, 1)
        eps = (x_t - ab.sqrt() * c) / (1 - ab).sqrt()
        x0 = torch.full_like(x_t, c)
        return {"eps": eps, "x0": x0, "v": ab.sqrt() * eps - (1 - ab).sqrt() * x0}[prediction]

    return model


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_loss_targets_are_exact_for_the_oracle_and_wrong_for_other_targets(prediction):
    s, c = Schedule.linear(100), 0.3
    x0 = torch.full((64, 3, 4, 4), c)
    g = torch.Generator().manual_seed(0)
    assert diffusion_loss(_point_mass_predictor(s, c, prediction), s, x0, prediction=prediction, generator=g) < 1e-8
    for other in {"eps", "x0", "v"} - {prediction}:
        assert diffusion_loss(_point_mass_predictor(s, c, other), s, x0, prediction=prediction, generator=g) > 1e-3


def test_context_is_dropped_to_the_null_context_at_the_requested_rate():
    seen = []

    def model(x_t, t, context):
        seen.append(context)
        return torch.zeros_like(x_t)

    s, x0, ctx = Schedule.linear(10), torch.zeros(4000, 1, 1, 1), torch.ones(4000, 3)
    diffusion_loss(model, s, x0, ctx, p_uncond=0.25, generator=torch.Generator().manual_seed(0))
    dropped = (seen[0].abs().sum(1) == 0).float().mean().item()
    assert dropped == pytest.approx(0.25, abs=0.02)
    diffusion_loss(model, s, x0, ctx, p_uncond=0.0)
    assert (seen[1] == 1).all()


def test_timesteps_are_uniform_over_all_steps():
    seen = []

    def model(x_t, t, context):
        seen.append(t)
        return torch.zeros_like(x_t)

    diffusion_loss(model, Schedule.linear(10), torch.zeros(20000, 1, 1, 1), generator=torch.Generator().manual_seed(1))
    counts = torch.bincount(seen[0], minlength=10)
    assert len(counts) == 10 and counts.min() > 1800 and counts.max() < 2200


def test_min_snr_gamma_weights():
    s = Schedule.linear(500)
    t = torch.tensor([0, 100, 499])
    snr = s.snr(t).float()
    assert snr[0] > 5 > snr[2]
    eps_w = min_snr_weight(s, t, "eps", 5.0)
    assert torch.allclose(eps_w, torch.tensor([5 / snr[0], 5 / snr[1] if snr[1] > 5 else 1.0, 1.0]))
    assert torch.allclose(min_snr_weight(s, t, "x0", 5.0), torch.minimum(snr, torch.tensor(5.0)))
    assert torch.allclose(min_snr_weight(s, t, "v", 5.0), torch.minimum(snr, torch.tensor(5.0)) / (snr + 1))
    zero = Schedule.linear(50).rescale_zero_terminal_snr()
    assert min_snr_weight(zero, torch.tensor([49]), "eps", 5.0).item() == 1.0  # no 0/0 at zero SNR
    with pytest.raises(UsageError, match="snr_gamma=0"):
        min_snr_weight(s, t, "eps", 0.0)


def test_unknown_prediction_is_named():
    with pytest.raises(UsageError, match="prediction='noise'"):
        diffusion_loss(lambda x, t, c: x, Schedule.linear(5), torch.zeros(1, 1, 1, 1), prediction="noise")
