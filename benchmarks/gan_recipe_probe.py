"""Probes of the DCGAN recipe on the bundled digits (issue 12): which changes to the former shipped
``dcgan`` recipe (channels 32, non-saturating loss, Adam 2e-4, batch 64) lower the FID ratio.

Each probe trains from seed 0 for ``--steps`` steps and scores the generator (and, with ``--ema``, the
moving average of its weights) every ``--every`` steps on the validated metric
(``coursekit.eval.quality.score_samples``: 1,000 samples, seed 1, against 1,000 training digits,
beside the real-vs-real floor at the same N). Architectures are built by editing a default GAN:

    --deep    one 3x3 convolution (+ batch norm + ReLU) in G at 7x7 and at 14x14
    --ddeep   one 3x3 convolution (+ LeakyReLU) in D at 14x14 and at 7x7
    --mbstd   the minibatch standard deviation channel before D's 7x7 convolution
    --r1 G    R1 penalty, gamma G, on D's gradient at the real images
    --ema D   moving average of G's weights, decay D with warm-up min(D, (1 + s) / (10 + s))
    --aug     translation (3 pixels) and/or cutout (13-pixel square) on everything D sees

``--deep --ddeep --mbstd`` builds exactly ``GANConfig(extra_layers=1, minibatch_std=True)`` (same
layers, same parameter counts: G 286,593, D 83,329 at 32 channels); the shipped ``dcgan`` was then
trained with ``coursekit train dcgan`` (its record holds the command). This loop is a probe, not
``train_gan``: R1 is taken through D's forward pass on the real batch, and the random streams differ.

The probes in the results file (all ``--steps 8000 --every 2000``; ``full-r1`` and ``full-r1-t`` were
stopped after their first evaluation, at 2,000 steps, to free the CPU for the shipped run):

    base       (the former recipe)           deep       --ema 0.999 --deep
    ema        --ema 0.999                    mbstd      --ema 0.999 --mbstd (adds D's 7x7 convolution too)
    ema-t      --ema 0.999 --aug translation  full       --ema 0.999 --deep --ddeep --mbstd
    r1         --ema 0.999 --r1 1             full-r1    full + --r1 1;  full-r1-t: full-r1 + --aug translation

Run on the 2-core CPU, two probes at a time with one thread each (``OMP_NUM_THREADS=1``), so the
``s`` column (seconds of training, scoring excluded) is contended wall time, only roughly comparable
between rows. Results, one JSON line per evaluation: ``gan_recipe_probe.jsonl``, made by e.g.

    OMP_NUM_THREADS=1 python benchmarks/gan_recipe_probe.py --steps 8000 --every 2000 --name full \
        --ema 0.999 --deep --ddeep --mbstd >> benchmarks/gan_recipe_probe.jsonl
"""
import argparse, copy, json, time, sys
import torch, torch.nn.functional as F
from coursekit.data import load_mnist, make_loader
from coursekit.models.gan import GAN, GANConfig, optimizers, discriminator_loss, generator_loss_nonsaturating
from coursekit.eval.quality import score_samples

p = argparse.ArgumentParser()
p.add_argument("--name"); p.add_argument("--steps", type=int, default=3000); p.add_argument("--every", type=int, default=1000)
p.add_argument("--channels", type=int, default=32); p.add_argument("--gch", type=int, default=None)
p.add_argument("--ema", type=float, default=0.0); p.add_argument("--aug", default="")
p.add_argument("--lr-g", type=float, default=2e-4); p.add_argument("--lr-d", type=float, default=2e-4)
p.add_argument("--deep", action="store_true"); p.add_argument("--mbstd", action="store_true"); p.add_argument("--ddeep", action="store_true"); p.add_argument("--beta1", type=float, default=0.5); p.add_argument("--batch", type=int, default=64); p.add_argument("--r1", type=float, default=0.0)
a = p.parse_args()
torch.manual_seed(0)
data = load_mnist("train", scale="symmetric", source="bundled")
loader = make_loader(data, a.batch, generator=torch.Generator().manual_seed(0))
cfg = GANConfig(generator_channels=a.gch or a.channels, discriminator_channels=a.channels)
gan = GAN(cfg)
from torch import nn
from coursekit.models.gan import init_weights
if a.deep:
    w = cfg.generator_channels
    up = list(gan.generator.upsample)
    gan.generator.upsample = nn.Sequential(nn.Conv2d(2*w, 2*w, 3, padding=1, bias=False), nn.BatchNorm2d(2*w), nn.ReLU(),
        *up[:3], nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(), *up[3:])
    gan.generator.upsample.apply(init_weights)
class MBStd(nn.Module):
    def forward(self, x):
        s = x.std(0, unbiased=False).mean().expand(x.shape[0], 1, x.shape[2], x.shape[3])
        return torch.cat([x, s], 1)
if a.mbstd or a.ddeep:
    w = cfg.discriminator_channels
    f = list(gan.discriminator.features)  # conv, lrelu, conv, norm, lrelu, flatten
    extra = [MBStd()] if a.mbstd else []
    c = 2*w + (1 if a.mbstd else 0)
    layers = f[:2] + ([nn.Conv2d(w, w, 3, padding=1), nn.LeakyReLU(0.2)] if a.ddeep else []) + f[2:5] + extra \
        + ([nn.Conv2d(c, 2*w, 3, padding=1), nn.LeakyReLU(0.2)] if (a.ddeep or a.mbstd) else []) + f[5:]
    gan.discriminator.features = nn.Sequential(*layers)
    gan.discriminator.features.apply(init_weights)
print(sum(p.numel() for p in gan.generator.parameters()), sum(p.numel() for p in gan.discriminator.parameters()), file=sys.stderr)
og, od = optimizers(gan, a.lr_g, a.lr_d, (a.beta1, 0.99 if a.beta1 == 0 else 0.999))
ema = copy.deepcopy(gan.generator) if a.ema else None
g = torch.Generator().manual_seed(0)

def augment(x):
    if not a.aug: return x
    B = x.shape[0]
    if "translation" in a.aug:
        shift = 3
        pad = F.pad(x, (shift,)*4, value=-1.0)
        dx = torch.randint(0, 2*shift+1, (B,), generator=g); dy = torch.randint(0, 2*shift+1, (B,), generator=g)
        idx_y = (torch.arange(28)[None, :] + dy[:, None])  # B,28
        idx_x = (torch.arange(28)[None, :] + dx[:, None])
        x = pad[torch.arange(B)[:, None, None], :, idx_y[:, :, None], idx_x[:, None, :]].permute(0, 3, 1, 2)
    if "cutout" in a.aug:
        size = 14
        cy = torch.randint(0, 28 + (1 - size % 2), (B,), generator=g); cx = torch.randint(0, 28 + (1 - size % 2), (B,), generator=g)
        yy = torch.arange(28)[None, :, None]; xx = torch.arange(28)[None, None, :]
        inside = ((yy - cy[:, None, None]).abs() < size // 2) & ((xx - cx[:, None, None]).abs() < size // 2)
        x = torch.where(inside[:, None], torch.full_like(x, -1.0), x)
    return x

def score(G):
    G.eval()
    with torch.no_grad():
        z = torch.randn(1000, cfg.latent_dim, generator=torch.Generator().manual_seed(1))
        s = (G(z) + 1) / 2
    G.train()
    r = score_samples(s, pixel_range=(0, 1), num_samples=1000, seed=0)
    sm, fl = r, r["floor"]
    return dict(ratio=round(sm["fid"]/fl["fid"], 2), P=sm["precision"], R=sm["recall"], nad=sm["not_a_digit"],
                hist=sm["class_histogram"][:10])

step, t0 = 0, time.perf_counter()
out = []
while step < a.steps:
    for real in loader:
        real = real[0] if isinstance(real, (list, tuple)) else real
        z = torch.randn(real.shape[0], cfg.latent_dim, generator=g)
        fake = gan.generator(z)
        if a.r1: real.requires_grad_(True)
        rl = gan.discriminator(augment(real)); fl_ = gan.discriminator(augment(fake.detach()))
        dl = discriminator_loss(rl, fl_)
        if a.r1:
            (gr,) = torch.autograd.grad(rl.sum(), real, create_graph=True)
            dl = dl + a.r1 / 2 * gr.pow(2).flatten(1).sum(1).mean()
        od.zero_grad(set_to_none=True); dl.backward(); od.step()
        gl = generator_loss_nonsaturating(gan.discriminator(augment(fake)))
        og.zero_grad(set_to_none=True); gl.backward(); og.step()
        if ema is not None:
            with torch.no_grad():
                d = min(a.ema, (1 + step) / (10 + step))
                for pe, pg in zip(ema.parameters(), gan.generator.parameters()): pe.lerp_(pg, 1 - d)
                for be, bg in zip(ema.buffers(), gan.generator.buffers()): be.copy_(bg)
        step += 1
        if step % a.every == 0 or step == a.steps:
            el = time.perf_counter() - t0
            row = dict(name=a.name, step=step, s=round(el), G=score(gan.generator))
            if ema is not None: row["EMA"] = score(ema)
            print(json.dumps(row), flush=True); out.append(row)
            t0 = time.perf_counter() - el - 0  # scoring time excluded? keep simple
        if step >= a.steps: break
