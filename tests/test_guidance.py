"""Conditioning and guidance (chapter 5): condition dropout, classifier-free guidance, classifier
guidance, the cross-attending U-Net and the noise-aware classifier."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from coursekit.diffusion import DiffusionConfig, DiffusionModel, diffusion_loss, sample_loop
from coursekit.guidance import (ClassifierFreeGuidance, ClassifierGuidance, drop_labels, eps_to_prediction,
                                prediction_to_eps)
from coursekit.models.noisy_classifier import NoisyClassifier, NoisyClassifierConfig, noisy_classifier_loss
from coursekit.models.unet import UNet, UNetConfig
from coursekit.schedulers import DDIMScheduler, make_schedule

TINY = dict(base_channels=8, channel_mults=(1, 2), num_heads=2)


class LabelSum(nn.Module):
    """A stand-in network whose output is known: x * (t + 1) / 1000 + label, and that counts its calls."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.config = type("C", (), {"num_classes": num_classes})()
        self.scale = nn.Parameter(torch.ones(()))
        self.calls = []

    def forward(self, x, t, labels=None):
        self.calls.append(x.shape[0])
        return x * (t.float()[:, None, None, None] + 1) / 1000 * self.scale + labels.float()[:, None, None, None]


def test_drop_labels():
    labels = torch.arange(10).repeat(1000)
    assert torch.equal(drop_labels(labels, 0.0, 10), labels)
    assert (drop_labels(labels, 1.0, 10) == 10).all()
    dropped = drop_labels(labels, 0.2, 10, torch.Generator().manual_seed(0))
    assert abs((dropped == 10).float().mean().item() - 0.2) < 0.02
    kept = dropped != 10
    assert torch.equal(dropped[kept], labels[kept])
    assert torch.equal(dropped, drop_labels(labels, 0.2, 10, torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        drop_labels(labels, 1.5, 10)


def test_classifier_free_guidance_formula_and_one_batched_forward():
    net = LabelSum()
    x, t = torch.randn(4, 1, 2, 2), torch.tensor([5, 5, 7, 7])
    labels = torch.tensor([1, 2, 3, 4])
    cond, uncond = net(x, t, labels), net(x, t, torch.full_like(labels, 10))
    for w in (0.0, 1.0, 2.5, 7.5):
        net.calls.clear()
        guided = ClassifierFreeGuidance.for_labels(net, labels, w)(x, t)
        torch.testing.assert_close(guided, uncond + w * (cond - uncond))
        assert net.calls == ([8] if w not in (0.0, 1.0) else [4])  # cond and uncond in one forward of 2B
    # the paper's (1 + w') eps_c - w' eps_u is the same line with w = 1 + w'
    w_paper = 2.0
    torch.testing.assert_close(ClassifierFreeGuidance.for_labels(net, labels, 1 + w_paper)(x, t),
                               (1 + w_paper) * cond - w_paper * uncond)


def test_prediction_conversions_are_inverse_and_consistent():
    schedule = make_schedule("linear", 1000)
    x0, eps = torch.randn(5, 1, 4, 4), torch.randn(5, 1, 4, 4)
    t = torch.tensor([0, 10, 500, 900, 999])
    a = schedule.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    targets = {"epsilon": eps, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0, "sample": x0}
    for kind, target in targets.items():
        torch.testing.assert_close(prediction_to_eps(target, x_t, t, schedule, kind), eps, atol=2e-4, rtol=1e-4)
        torch.testing.assert_close(eps_to_prediction(eps, x_t, t, schedule, kind), target, atol=2e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="prediction_type"):
        prediction_to_eps(eps, x_t, t, schedule, "score")


def test_guidance_on_v_equals_guidance_on_eps():
    # The weights (1 - w) and w sum to one and v is affine in eps at fixed (x_t, t): guiding v's is guiding eps's.
    schedule = make_schedule("linear", 1000)
    x_t, t = torch.randn(3, 1, 4, 4), torch.tensor([50, 400, 950])
    v_cond, v_uncond = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    w = 4.0
    guided_v = v_uncond + w * (v_cond - v_uncond)
    to_eps = lambda v: prediction_to_eps(v, x_t, t, schedule, "v_prediction")  # noqa: E731
    torch.testing.assert_close(to_eps(guided_v), to_eps(v_uncond) + w * (to_eps(v_cond) - to_eps(v_uncond)),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("which", ["ours", "diffusers"])
def test_guided_sampling_with_our_and_diffusers_schedulers(which):
    torch.manual_seed(0)
    model = DiffusionModel(DiffusionConfig(**TINY, num_classes=10, prediction_type="v_prediction")).eval()
    with torch.no_grad():  # the zero-initialised head would make every prediction 0
        for p in model.unet.head.parameters():
            p.normal_(0, 0.1)
    labels = torch.tensor([3, 7])

    def scheduler():
        if which == "ours":
            return model.scheduler("ddim")
        from diffusers import DDIMScheduler as DiffusersDDIM

        return DiffusersDDIM(**model.diffusers_config(), clip_sample=True)

    def run(net, **kwargs):
        return sample_loop(net, scheduler(), (2, 1, 28, 28), generator=torch.Generator().manual_seed(1),
                           num_inference_steps=5, **kwargs)

    plain = run(model, labels=labels)
    torch.testing.assert_close(run(ClassifierFreeGuidance.for_labels(model, labels, 1.0)), plain)
    torch.testing.assert_close(run(ClassifierFreeGuidance.for_labels(model, labels, 0.0)),
                               run(model, labels=torch.full_like(labels, 10)))
    guided = run(ClassifierFreeGuidance.for_labels(model, labels, 3.0))
    assert guided.shape == plain.shape and not torch.allclose(guided, plain)
    # DiffusionModel.sample wires it in (and w = 1 is the plain conditional model)
    a = model.sample(2, torch.Generator().manual_seed(1), num_inference_steps=5, labels=labels, guidance_scale=1.0)
    b = model.sample(2, torch.Generator().manual_seed(1), num_inference_steps=5, labels=labels)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="needs labels"):
        model.sample(2, num_inference_steps=5, guidance_scale=3.0)


class LinearClassifier(nn.Module):
    """logits = W flatten(x): grad_x log softmax_y = W_y - sum_k p_k W_k, in closed form."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(10, 16))

    def forward(self, x, t):
        return x.flatten(1) @ self.weight.T


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_classifier_guidance_adds_the_scaled_log_probability_gradient(prediction_type):
    torch.manual_seed(0)
    schedule = make_schedule("linear", 1000)
    eps_net = lambda x, t: 0.5 * x  # noqa: E731  a model that predicts eps = x / 2
    model = lambda x, t: eps_to_prediction(eps_net(x, t), x, t, schedule, prediction_type)  # noqa: E731
    model.config = type("C", (), {"prediction_type": prediction_type})()
    classifier = LinearClassifier()
    x, t, labels = torch.randn(3, 1, 4, 4), torch.tensor([10, 500, 990]), torch.tensor([2, 5, 9])
    guidance = ClassifierGuidance(model, classifier, labels, scale=3.0, schedule=schedule)
    probs = (x.flatten(1) @ classifier.weight.T).softmax(-1)
    gradient = (classifier.weight[labels] - probs @ classifier.weight).reshape(x.shape)
    torch.testing.assert_close(guidance.log_prob_gradient(x, t), gradient.detach(), atol=1e-5, rtol=1e-5)
    sigma = (1 - schedule.alphas_cumprod[t]).sqrt().reshape(-1, 1, 1, 1)
    guided_eps = prediction_to_eps(guidance(x, t), x, t, schedule, prediction_type)
    torch.testing.assert_close(guided_eps, eps_net(x, t) - 3.0 * sigma * gradient.detach(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ClassifierGuidance(model, classifier, labels, 0.0, schedule)(x, t), model(x, t))
    # it runs inside a sampling loop (which runs under no_grad)
    scheduler = DDIMScheduler(prediction_type=prediction_type)
    out = sample_loop(guidance, scheduler, (3, 1, 4, 4), num_inference_steps=3, device="cpu")
    assert out.shape == (3, 1, 4, 4) and torch.isfinite(out).all()


def test_diffusion_loss_passes_labels_and_drops_them():
    net = LabelSum()
    net.schedule = make_schedule("linear", 1000)
    x0, labels = torch.randn(64, 1, 2, 2), torch.randint(0, 10, (64,))
    seen = []
    original = net.forward
    net.forward = lambda x, t, labels=None: (seen.append(labels), original(x, t, labels))[1]
    diffusion_loss(net, (x0, labels), torch.Generator().manual_seed(0))
    assert torch.equal(seen[-1], labels)
    diffusion_loss(net, (x0, labels), torch.Generator().manual_seed(0), cond_drop_prob=1.0)
    assert (seen[-1] == 10).all()
    with pytest.raises(ValueError, match=r"\(images, labels\)"):
        diffusion_loss(net, x0)
    unconditional = DiffusionModel(DiffusionConfig(**TINY))
    with pytest.raises(ValueError, match="cond_drop_prob needs a class-conditional"):
        diffusion_loss(unconditional, (torch.randn(4, 1, 28, 28), labels[:4]), cond_drop_prob=0.1)


def test_unet_cross_attention_to_a_context():
    torch.manual_seed(0)
    config = UNetConfig(**TINY, context_dim=12, cross_attention_levels=(1,))
    unet = UNet(config).eval()
    with torch.no_grad():
        for p in unet.head.parameters():
            p.normal_(0, 0.1)
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([3, 500])
    context, keep = torch.randn(2, 5, 12), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    out = unet(x, t, context=context, context_mask=keep)
    assert out.shape == x.shape
    # the output depends on the context, but not on padded context tokens
    changed = context.clone()
    changed[1, 2:] = torch.randn(3, 12) * 10
    torch.testing.assert_close(unet(x, t, context=changed, context_mask=keep)[1], out[1], atol=1e-5, rtol=1e-5)
    changed[0, 0] += 1
    assert not torch.allclose(unet(x, t, context=changed, context_mask=keep)[0], out[0])
    with pytest.raises(ValueError, match="pass context"):
        unet(x, t)
    with pytest.raises(ValueError, match=r"context of shape \(2, tokens, 12\)"):
        unet(x, t, context=torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match="takes no context"):
        UNet(UNetConfig(**TINY))(x, t, context=context)
    with pytest.raises(ValueError, match="need a context_dim"):
        UNetConfig(**TINY, cross_attention_levels=(1,))
    with pytest.raises(ValueError, match="integer labels"):
        UNet(UNetConfig(**TINY, num_classes=10))(x, t, torch.tensor([3, 11]))


def test_conditional_checkpoint_round_trip(tmp_path):
    from coursekit.checkpoint import load_checkpoint, save_checkpoint

    model = DiffusionModel(DiffusionConfig(**TINY, num_classes=10, context_dim=12, cross_attention_levels=(1,))).eval()
    save_checkpoint(model, tmp_path / "m")
    loaded = load_checkpoint(tmp_path / "m")
    x, t, labels, context = torch.randn(2, 1, 28, 28), torch.tensor([1, 2]), torch.tensor([0, 10]), torch.randn(2, 3, 12)
    torch.testing.assert_close(loaded(x, t, labels, context), model(x, t, labels, context))


def test_noisy_classifier_learns():
    from coursekit.data import load_mnist

    torch.manual_seed(0)
    digits = load_mnist("train", scale="symmetric", source="bundled")
    x0, labels = digits.images[:256], digits.labels[:256]
    model = NoisyClassifier(NoisyClassifierConfig(base_channels=8))
    assert model(x0[:4], torch.tensor([0, 1, 2, 999])).shape == (4, 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    evaluate = lambda: noisy_classifier_loss(model, (x0, labels), torch.Generator().manual_seed(5)).item()  # noqa: E731
    before = evaluate()
    for _ in range(40):
        loss = noisy_classifier_loss(model, (x0[:64], labels[:64]), generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert evaluate() < before - 0.3
    with pytest.raises(ValueError, match="expected images"):
        model(torch.randn(2, 1, 14, 14), 3)
