"""coursekit.schedulers against closed forms, a float64 reference and diffusers' schedulers."""

import math

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from coursekit.schedulers import (DDIMScheduler, DDPMScheduler, NoiseSchedule, cosine_betas, linear_betas,  # noqa: E402
                                  make_schedule)

DIFFUSERS_NAMES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


def _pair(kind: str, which: str, **kwargs):
    ours = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}[which](beta_schedule=kind, **kwargs)
    ref_class = {"ddpm": diffusers.DDPMScheduler, "ddim": diffusers.DDIMScheduler}[which]
    return ours, ref_class(beta_schedule=DIFFUSERS_NAMES[kind], **kwargs)


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 1, 6, 6, generator=g), torch.randn(3, 1, 6, 6, generator=g)


# --- exact schedule values -------------------------------------------------------------------

def test_linear_schedule_exact_values():
    schedule = make_schedule("linear", 1000)
    assert schedule.betas.dtype == torch.float32 and schedule.betas.shape == (1000,)
    # float64 values rounded once to float32: the endpoints are exactly float32(1e-4) and float32(0.02)
    assert schedule.betas[0] == torch.tensor(1e-4, dtype=torch.float32)
    assert schedule.betas[-1] == torch.tensor(0.02, dtype=torch.float32)
    assert schedule.betas[1].item() == pytest.approx(1e-4 + (0.02 - 1e-4) / 999, rel=1e-6)
    # alpha_bar_t = prod_{s<=t} (1 - beta_s), evaluated in float64 by hand
    betas64 = [1e-4 + i * (0.02 - 1e-4) / 999 for i in range(1000)]
    for t in (0, 1, 9, 99, 499, 999):
        assert schedule.alphas_cumprod[t].item() == pytest.approx(math.prod(1 - b for b in betas64[:t + 1]), rel=1e-6)
    assert torch.allclose(schedule.alphas, 1 - schedule.betas)
    ab64 = torch.cumprod(1 - torch.tensor(betas64, dtype=torch.float64), 0)
    assert torch.allclose(schedule.snr.double(), ab64 / (1 - ab64), rtol=1e-6)
    assert (schedule.alphas_cumprod.diff() < 0).all()


def test_cosine_schedule_exact_values():
    schedule = make_schedule("cosine", 1000)

    def alpha_bar(u):
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    for t in (0, 10, 500, 998):
        expected = alpha_bar((t + 1) / 1000) / alpha_bar(0)  # the product telescopes while beta < 0.999
        assert schedule.alphas_cumprod[t].item() == pytest.approx(expected, rel=1e-5)
    assert schedule.betas.max().item() == pytest.approx(0.999)  # the last beta is capped
    assert torch.all(cosine_betas(1000) == schedule.betas)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedules_equal_diffusers(kind):
    ours, ref = _pair(kind, "ddpm")
    assert torch.allclose(ours.betas, ref.betas, rtol=1e-6, atol=1e-9)
    assert torch.allclose(ours.alphas_cumprod, ref.alphas_cumprod, rtol=0, atol=1e-6)


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule("quadratic")
    with pytest.raises(ValueError, match="positive int"):
        linear_betas(0)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        NoiseSchedule(torch.tensor([0.1, 1.5]))


# --- add_noise and step against diffusers ----------------------------------------------------

@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("which", ["ddpm", "ddim"])
def test_add_noise_equals_diffusers(kind, which):
    ours, ref = _pair(kind, which)
    x0, noise = _inputs()
    t = torch.tensor([0, 417, 999])
    assert torch.allclose(ours.add_noise(x0, noise, t), ref.add_noise(x0, noise, t), rtol=0, atol=1e-5)


def _alpha_bars(kind):
    betas = linear_betas(1000).double() if kind == "linear" else cosine_betas(1000).double()
    return torch.cumprod(1 - betas, 0)


def _reference_x0(kind, t, x, eps):
    """The predicted x0 at step t computed in float64."""
    ab_t = _alpha_bars(kind)[t]
    return (x.double() - (1 - ab_t).sqrt() * eps.double()) / ab_t.sqrt()


def _reference_step(kind, t, prev_t, x, eps, z, sigma_scale):
    """One reverse step computed from the schedule in float64 (no clipping): the exact answer."""
    betas = linear_betas(1000).double() if kind == "linear" else cosine_betas(1000).double()
    ab = torch.cumprod(1 - betas, 0)
    ab_t, ab_prev = ab[t], (ab[prev_t] if prev_t >= 0 else torch.tensor(1.0, dtype=torch.float64))
    x, eps, z = x.double(), eps.double(), z.double()
    x0 = (x - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()
    var = (1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)
    sigma = sigma_scale * var.sqrt()
    return ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).sqrt() * eps + sigma * z


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("which,num_steps,eta", [("ddpm", 1000, None), ("ddpm", 50, None), ("ddim", 1000, 0.0),
                                                 ("ddim", 100, 0.0), ("ddim", 50, 0.5), ("ddim", 20, 1.0)])
def test_step_equals_diffusers(kind, which, num_steps, eta):
    """Every step on the grid, with the same generator seed for both, matches diffusers to 1e-5
    (absolute, or relative where values are large: at t = 999 of the cosine schedule the
    predicted x0 is divided by sqrt(alpha_bar) ~ 5e-5).

    The exception is a few steps near t = 0 on fine grids: there a step divides numbers of size
    ~1e-4 (beta_t by 1 - alpha_bar_t), and diffusers' float32 cumulative product is off in the
    third digit. There we require that our step is the float64 answer to float32 precision and
    that all of the gap to diffusers is diffusers' own rounding error.
    """
    kwargs = {"clip_sample": False}
    ours, ref = _pair(kind, which, **kwargs)
    ours.set_timesteps(num_steps)
    ref.set_timesteps(num_steps)
    assert torch.equal(ours.timesteps, ref.timesteps)
    x, eps = _inputs(1)
    extra = {} if eta is None else {"eta": eta}
    ill_conditioned = 0
    for t in ours.timesteps.tolist():
        a = ours.step(eps, t, x, generator=torch.Generator().manual_seed(t), **extra)
        b = ref.step(eps, t, x, generator=torch.Generator().manual_seed(t), **extra)
        gap = (a.prev_sample - b.prev_sample).abs().max().item()
        # The predicted x0 = (x - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar) is ill-conditioned in float32
        # near t = 999 of the cosine schedule: the rounding of the numerator's terms is divided by
        # sqrt(alpha_bar) ~ 5e-5, and a relative error d in diffusers' float32 cumulative product becomes
        # d / 2 in its x0. So each is held to the float64 answer within its own float32 error bound.
        exact_x0, ab_t = _reference_x0(kind, t, x, eps), _alpha_bars(kind)[t]
        rounding = 8 * 2.0**-24 * (x.double().abs() + eps.double().abs()) / ab_t.sqrt() + 1e-6
        # diffusers' float32 alpha_bar: relative error d in alpha_bar, and d1 in 1 - alpha_bar (large near t = 0)
        ab_ref = ref.alphas_cumprod[t].double()
        d, d1 = abs(ab_ref / ab_t - 1).item(), abs((1 - ab_ref) / (1 - ab_t) - 1).item()
        its_own = d * exact_x0.abs() + d1 / 2 * (1 - ab_t).sqrt() * eps.double().abs() / ab_t.sqrt()
        assert ((a.pred_original_sample.double() - exact_x0).abs() <= rounding).all(), f"t={t}: our x0"
        assert ((b.pred_original_sample.double() - exact_x0).abs() <= rounding + its_own).all(), f"t={t}: diffusers' x0"
        if torch.allclose(a.prev_sample, b.prev_sample, rtol=1e-5, atol=1e-5):
            continue
        ill_conditioned += 1
        assert t < 100, f"step at t={t} differs from diffusers by {gap:.2e}"
        prev_t = t - 1000 // num_steps
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(t))
        sigma_scale = 1.0 if which == "ddpm" else eta
        exact = _reference_step(kind, t, prev_t, x, eps, z if (which == "ddim" and eta) or (which == "ddpm" and t > 0)
                                else torch.zeros_like(z), sigma_scale if t > 0 or which == "ddim" else 0.0)
        ours_error = (a.prev_sample.double() - exact).abs().max().item()
        diffusers_error = (b.prev_sample.double() - exact).abs().max().item()
        assert ours_error < 2e-6, f"t={t}: ours is {ours_error:.2e} from the float64 answer"
        assert gap <= diffusers_error + 2e-6
    assert ill_conditioned <= len(ours.timesteps) // 20


def test_clipping_and_final_step_match_diffusers():
    ours, ref = _pair("linear", "ddim")  # clip_sample=True and set_alpha_to_one=True, as diffusers' defaults
    ours.set_timesteps(10)
    ref.set_timesteps(10)
    x, eps = _inputs(2)
    x = 3 * x  # so that the predicted x0 leaves [-1, 1] and gets clipped
    for t in ours.timesteps.tolist():
        # diffusers' default keeps the raw noise next to the clipped x0; ours must be asked for it
        a, b = ours.step(eps, t, x, use_clipped_model_output=False), ref.step(eps, t, x)
        assert torch.allclose(a.prev_sample, b.prev_sample, atol=1e-5)
        assert a.pred_original_sample.abs().max() <= 1.0
    # the last DDIM step (t = 0 -> alpha_bar = 1) returns the clipped predicted x0 itself
    last = ours.step(eps, 0, x)
    assert torch.allclose(last.prev_sample, last.pred_original_sample, atol=1e-6)


@pytest.mark.parametrize("eta", [0.0, 0.6])
def test_clipped_model_output_equals_diffusers(eta):
    ours, ref = _pair("linear", "ddim")
    ours.set_timesteps(25)
    ref.set_timesteps(25)
    x, eps = _inputs(6)
    x = 3 * x
    for t in ours.timesteps.tolist():
        a = ours.step(eps, t, x, eta=eta, use_clipped_model_output=True, generator=torch.Generator().manual_seed(t))
        b = ref.step(eps, t, x, eta=eta, use_clipped_model_output=True, generator=torch.Generator().manual_seed(t))
        # near t = 0 the recomputed noise is divided by sqrt(1 - alpha_bar_t) (0.01 at t = 0, 0.14 at
        # t = 40), which magnifies diffusers' float32 alpha_bar error (see test_step_equals_diffusers)
        tolerance = 1e-5 if t >= 100 else 1e-4
        assert torch.allclose(a.prev_sample, b.prev_sample, rtol=tolerance, atol=tolerance), t
    raw = ours.step(eps, 600, x, use_clipped_model_output=False).prev_sample
    assert not torch.allclose(raw, ours.step(eps, 600, x).prev_sample)  # the course's default recomputes the noise


def test_ddpm_adds_no_noise_at_the_last_step():
    scheduler = DDPMScheduler(clip_sample=False)
    x, eps = _inputs(3)
    a = scheduler.step(eps, 0, x, generator=torch.Generator().manual_seed(0)).prev_sample
    b = scheduler.step(eps, 0, x, generator=torch.Generator().manual_seed(1)).prev_sample
    assert torch.equal(a, b)
    c = scheduler.step(eps, 1, x, generator=torch.Generator().manual_seed(1)).prev_sample
    d = scheduler.step(eps, 1, x, generator=torch.Generator().manual_seed(2)).prev_sample
    assert not torch.equal(c, d)
    # posterior variance (DDPM eq. 7) by hand at t = 1, and beta_t for fixed_large
    ab = torch.cumprod(1 - linear_betas(1000).double(), 0)
    beta1 = linear_betas(1000).double()[1]
    assert scheduler.posterior_variance(1).item() == pytest.approx(((1 - ab[0]) / (1 - ab[1]) * beta1).item(), rel=1e-5)
    assert DDPMScheduler(variance_type="fixed_large").posterior_variance(1).item() == pytest.approx(beta1.item(), rel=1e-5)


def test_variance_noise_can_be_given_as_in_diffusers():
    x, eps = _inputs(5)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    # diffusers' DDPMScheduler.step takes only a generator: the generator that draws z gives the same step
    for ours, ref, extra in [(DDPMScheduler(), diffusers.DDPMScheduler(), {}),
                             (DDIMScheduler(), diffusers.DDIMScheduler(), {"eta": 0.7, "use_clipped_model_output": False}),
                             (DDIMScheduler(), diffusers.DDIMScheduler(), {"eta": 0.7, "use_clipped_model_output": True})]:
        ours.set_timesteps(50)
        ref.set_timesteps(50)
        a = ours.step(eps, 500, x, variance_noise=z, **extra).prev_sample
        b = ref.step(eps, 500, x, generator=torch.Generator().manual_seed(9), **extra).prev_sample
        assert torch.allclose(a, b, atol=1e-5)
        with pytest.raises(ValueError, match="variance_noise must have the sample's shape"):
            ours.step(eps, 500, x, variance_noise=z[:1], **extra)


def test_ddim_is_deterministic_at_eta_zero_and_tuple_unpacks():
    scheduler = DDIMScheduler()
    scheduler.set_timesteps(20)
    x, eps = _inputs(4)
    a = scheduler.step(eps, 500, x, generator=torch.Generator().manual_seed(0))
    b = scheduler.step(eps, 500, x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.prev_sample, b.prev_sample)
    prev, x0 = a
    assert prev is a.prev_sample and x0 is a.pred_original_sample
    prev2, x02 = scheduler.step(eps, 500, x, return_dict=False)
    assert torch.equal(prev2, prev)


def test_out_of_range_timesteps_raise_clear_errors():
    ddpm, ddim = DDPMScheduler(), DDIMScheduler()
    x, eps = _inputs()
    with pytest.raises(ValueError, match=r"timesteps must lie in 0 \.\. 999"):
        ddpm.step(eps, 1000, x)
    with pytest.raises(ValueError, match=r"timesteps must lie in 0 \.\. 999"):
        ddpm.add_noise(x, eps, torch.tensor([-1, 3, 5]))
    with pytest.raises(ValueError, match="whole numbers"):
        ddpm.add_noise(x, eps, torch.tensor([0.5, 1.0, 2.0]))
    with pytest.raises(RuntimeError, match="set_timesteps"):
        ddim.step(eps, 10, x)
    with pytest.raises(ValueError, match="num_inference_steps must be an int in 1 .. 1000"):
        ddim.set_timesteps(0)
    with pytest.raises(ValueError, match="num_inference_steps"):
        ddim.set_timesteps(1001)
    ddim.set_timesteps(10)
    with pytest.raises(ValueError, match="eta must be >= 0"):
        ddim.step(eps, 900, x, eta=-0.1)
    with pytest.raises(ValueError, match="variance_type"):
        DDPMScheduler(variance_type="learned")


def test_the_course_s_ddim_step_is_the_exact_step_for_the_clipped_x0():
    """The default DDIM step recomputes the noise from the clipped x0, so it equals the unclipped
    DDIM step of a model that had predicted that x0 exactly; diffusers' default (raw noise) differs
    from it by sqrt(1 - alpha_bar_prev) (eps_raw - eps_clipped): a term of fixed size per step."""
    ours = DDIMScheduler()
    plain = DDIMScheduler(clip_sample=False)
    ours.set_timesteps(20)
    plain.set_timesteps(20)
    x, eps = _inputs(4)
    x = 3 * x
    for t in ours.timesteps.tolist()[:-1]:
        step = ours.step(eps, t, x)
        ab = ours.alphas_cumprod.double()[t]
        ab_prev = ours.alphas_cumprod.double()[t - 50]
        x0 = step.pred_original_sample.double()
        assert x0.abs().max() <= 1.0
        eps_clipped = (x.double() - ab.sqrt() * x0) / (1 - ab).sqrt()
        exact = plain.step(eps_clipped.float(), t, x).prev_sample
        assert torch.allclose(step.prev_sample, exact, atol=1e-5), t
        raw = ours.step(eps, t, x, use_clipped_model_output=False).prev_sample
        gap = (raw.double() - step.prev_sample.double()) - (1 - ab_prev).sqrt() * (eps.double() - eps_clipped)
        assert gap.abs().max() < 1e-4, t


@pytest.mark.parametrize("which", ["ddpm", "ddim"])
@pytest.mark.parametrize("num_steps", [1, 20, 30, 50, 333, 1000])
def test_trailing_timesteps_equal_diffusers(which, num_steps):
    """The "trailing" grid starts at T - 1 and is diffusers' to the integer; "leading" starts lower."""
    ours, ref = _pair("linear", which, timestep_spacing="trailing")
    ours.set_timesteps(num_steps)
    ref.set_timesteps(num_steps)
    assert torch.equal(ours.timesteps, ref.timesteps) and ours.timesteps[0] == 999 and len(ours.timesteps) == num_steps
    leading, _ = _pair("linear", which)
    leading.set_timesteps(num_steps)
    assert leading.timesteps[0] == (num_steps - 1) * (1000 // num_steps) and leading.timesteps[-1] == 0
    if which == "ddpm":  # DDPM steps to the next grid point, -1 after the last, as diffusers' previous_timestep
        grid = ours.timesteps.tolist()
        assert [ours.previous_timestep(t) for t in grid] == [int(ref.previous_timestep(t)) for t in grid] \
            == grid[1:] + [-1]


def test_unknown_timestep_spacing_is_refused():
    with pytest.raises(ValueError, match="timestep_spacing must be one of"):
        DDIMScheduler(timestep_spacing="linspace")


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
@pytest.mark.parametrize("which,clip", [("ddpm", False), ("ddpm", True), ("ddim", False), ("ddim", True)])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_other_parameterisations_equal_diffusers(prediction_type, which, clip, spacing):
    """v- and x0-prediction: every step equals diffusers' (the noise flag explicit for DDIM), on
    either timestep grid."""
    ours, ref = _pair("linear", which, prediction_type=prediction_type, clip_sample=clip, timestep_spacing=spacing)
    ours.set_timesteps(50)
    ref.set_timesteps(50)
    x, out = _inputs(5)
    x = 2 * x
    extra = {"eta": 0.5, "use_clipped_model_output": True} if which == "ddim" else {}
    for t in ours.timesteps.tolist():
        a = ours.step(out, t, x, generator=torch.Generator().manual_seed(t), **extra)
        b = ref.step(out, t, x, generator=torch.Generator().manual_seed(t), **extra)
        # x0-prediction divides by sqrt(1 - alpha_bar_t) (0.01 at t = 0) where diffusers' float32 alpha_bar is coarse
        tolerance = 1e-5 if t >= 100 else 1e-3
        assert torch.allclose(a.pred_original_sample, b.pred_original_sample, rtol=1e-5, atol=1e-5), t
        assert torch.allclose(a.prev_sample, b.prev_sample, rtol=tolerance, atol=tolerance), t


def test_v_prediction_inverts_the_forward_process_exactly():
    """With v = sqrt(a) eps - sqrt(1 - a) x0 given exactly, the scheduler recovers x0 and eps at every t."""
    scheduler = DDIMScheduler(prediction_type="v_prediction", clip_sample=False)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(4, 1, 5, 5, generator=g) * 2 - 1, torch.randn(4, 1, 5, 5, generator=g)
    for t in [0, 10, 500, 999]:
        ab = scheduler._alpha_bar64[t]
        x_t = (ab.sqrt() * x0.double() + (1 - ab).sqrt() * eps.double()).float()
        v = (ab.sqrt() * eps.double() - (1 - ab).sqrt() * x0.double()).float()
        x0_hat, eps_hat = scheduler._predict_x0_and_eps(v, x_t, ab)
        assert torch.allclose(x0_hat, x0, atol=1e-5) and torch.allclose(eps_hat, eps, atol=1e-5)


def test_unknown_prediction_type_is_refused():
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        DDPMScheduler(prediction_type="noise")


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("num_steps", [1000, 50])
def test_ddim_with_eta_one_is_ddpm_when_the_noise_agrees_with_the_clipped_x0(prediction_type, num_steps):
    """DDIM at eta = 1 takes DDPM's step (same mean, same variance, same z), clipping included, when
    it recomputes the noise from the clipped x0 (the course's default); with diffusers' default
    (raw noise) the two differ wherever the clipping binds."""
    ddim = DDIMScheduler(prediction_type=prediction_type)
    ddpm = DDPMScheduler(prediction_type=prediction_type)
    ddim.set_timesteps(num_steps)
    ddpm.set_timesteps(num_steps)
    x, out = _inputs(8)
    x = 3 * x  # the predicted x0 leaves [-1, 1], so the clipping binds
    differs = 0
    for t in ddim.timesteps.tolist()[::max(1, num_steps // 25)]:
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(t))
        a = ddim.step(out, t, x, eta=1.0, variance_noise=z).prev_sample
        b = ddpm.step(out, t, x, variance_noise=z).prev_sample
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4), t
        raw = ddim.step(out, t, x, eta=1.0, variance_noise=z, use_clipped_model_output=False).prev_sample
        differs += not torch.allclose(raw, b, atol=1e-3)
    assert differs > 0
