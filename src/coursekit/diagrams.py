"""Concept diagrams for the chapters, drawn with matplotlib alone.

One function per diagram; each returns its ``matplotlib.figure.Figure``. The diagrams are code so that
they stay true to the package: the U-Net's levels are those of ``UNetConfig``'s defaults (chapter 4),
the VAE's outputs are ``mu`` and ``logvar`` (chapter 2), the GAN's detach is the one in
``coursekit.models.gan`` (chapter 3).

Every figure is 8 inches wide with text of at least 9 points, drawn at ``DIAGRAM_DPI`` so that it is
736 CSS px wide in a notebook, inside the 757 px a cell's output image gets in the book. It is deterministic:
nothing random is drawn. The axes of each figure cover it exactly and use inches as data units, so
the positions below read as distances on the page.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

# Figure sizes in inches (width, height); the tests check them.
VAE_SIZE = (8.0, 3.4)
GAN_SIZE = (8.0, 3.6)
DDPM_SIZE = (8.0, 2.6)
UNET_SIZE = (8.0, 4.4)
DDIM_SIZE = (8.0, 3.0)

FONTSIZE = 10
DIAGRAM_DPI = 92  # CSS px per inch in a notebook (the course style's 100 would make 800 px, wider than an output)
SMALL = 9  # the smallest text in any diagram

# One colour per role, the same in every diagram.
DATA = "#dbe9f6"       # images and observed variables
LATENT = "#ffffff"     # latent variables and noise
NETWORK = "#fde2c4"    # learned networks
LOSS = "#f6d5d5"       # losses
NOTE = "#eeeeee"       # fixed operations
GRADIENT = "#b22222"   # backward (gradient) arrows


def _canvas(size: tuple[float, float]) -> tuple[Figure, plt.Axes]:
    """A figure whose single axes covers it, with one data unit per inch."""
    fig = plt.figure(figsize=size, dpi=DIAGRAM_DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, size[0])
    ax.set_ylim(0, size[1])
    ax.set_axis_off()
    return fig, ax


def _box(ax, center, width, height, text, color=NOTE, fontsize=FONTSIZE, style="round,pad=0.04", **kwargs):
    """A rounded box with centred text; returns the patch (arrows attach to its edge)."""
    x, y = center
    patch = FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle=style,
                           facecolor=color, edgecolor="black", linewidth=1.0, **kwargs)
    ax.add_patch(patch)
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)
    return patch


def _node(ax, center, text, color=LATENT, radius=0.27, fontsize=FONTSIZE + 1):
    """A circle for a random variable, as in a graphical model (shaded = observed)."""
    patch = Circle(center, radius, facecolor=color, edgecolor="black", linewidth=1.0)
    ax.add_patch(patch)
    ax.text(center[0], center[1], text, ha="center", va="center", fontsize=fontsize)
    return patch


def _arrow(ax, start, end, source=None, target=None, rad=0.0, color="black", linestyle="-",
           label=None, label_xy=None, fontsize=SMALL, label_color=None, **label_kwargs):
    """An arrow from ``start`` to ``end`` (points, clipped to the ``source``/``target`` patches)."""
    arrow = FancyArrowPatch(start, end, patchA=source, patchB=target, arrowstyle="-|>", mutation_scale=12,
                            connectionstyle=f"arc3,rad={rad}", color=color, linestyle=linestyle,
                            linewidth=1.2, shrinkA=2, shrinkB=2)
    ax.add_patch(arrow)
    if label is not None:
        if label_xy is None:
            label_xy = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
        label_kwargs.setdefault("ha", "center")
        label_kwargs.setdefault("va", "center")
        ax.text(*label_xy, label, fontsize=fontsize, color=label_color or color, **label_kwargs)
    return arrow


def vae_diagram() -> Figure:
    """The VAE (chapter 2): its graphical model beside its encoder/decoder pipeline.

    Left: the generative model z -> x with the decoder p_theta(x | z), and the encoder q_phi(z | x)
    as a dashed arrow back (section 2.1). Right: what one training step computes, with the
    reparameterization z = mu + sigma * eps of section 2.2.
    """
    fig, ax = _canvas(VAE_SIZE)
    # -- graphical model --------------------------------------------------------------------------
    ax.text(1.15, 3.15, "graphical model", ha="center", va="center", fontsize=FONTSIZE, weight="bold")
    z_node = _node(ax, (1.15, 2.35), "$z$")
    x_node = _node(ax, (1.15, 0.85), "$x$", color=DATA)
    _arrow(ax, (1.15, 2.35), (1.15, 0.85), z_node, x_node, rad=0.35, label=r"$p_\theta(x \mid z)$",
           label_xy=(0.45, 1.6))
    _arrow(ax, (1.15, 0.85), (1.15, 2.35), x_node, z_node, rad=0.35, linestyle="--",
           label=r"$q_\phi(z \mid x)$", label_xy=(2.1, 1.6))
    ax.text(1.15, 2.85, r"$p(z) = \mathcal{N}(0, I)$", ha="center", va="center", fontsize=SMALL)
    ax.text(1.15, 0.32, "observed (shaded)", ha="center", va="center", fontsize=SMALL)
    ax.plot([2.75, 2.75], [0.25, 3.2], color="0.6", linewidth=0.8)

    # -- encoder / decoder pipeline ---------------------------------------------------------------
    ax.text(5.35, 3.15, "encoder / decoder", ha="center", va="center", fontsize=FONTSIZE, weight="bold")
    y = 1.75
    x_in = _box(ax, (3.15, y), 0.45, 0.45, "$x$", DATA)
    encoder = _box(ax, (4.05, y), 0.95, 0.7, "encoder\n" + r"$q_\phi(z \mid x)$", NETWORK)
    mu = _box(ax, (5.15, y + 0.45), 0.6, 0.38, r"$\mu$", LATENT)
    logvar = _box(ax, (5.15, y - 0.45), 0.6, 0.38, r"$\log \sigma^2$", LATENT)
    reparam = _box(ax, (6.15, y), 0.9, 0.55, r"$z = \mu + \sigma \odot \varepsilon$", NOTE, fontsize=SMALL)
    eps = _box(ax, (6.15, 0.55), 1.05, 0.38, r"$\varepsilon \sim \mathcal{N}(0, I)$", LATENT, fontsize=SMALL)
    decoder = _box(ax, (7.05, 2.75), 0.85, 0.7, "decoder\n" + r"$p_\theta(x \mid z)$", NETWORK)
    x_hat = _box(ax, (7.05, 1.1), 0.45, 0.45, r"$\hat x$", DATA)
    _arrow(ax, (3.15, y), (4.05, y), x_in, encoder)
    _arrow(ax, (4.05, y), (5.15, y + 0.45), encoder, mu)
    _arrow(ax, (4.05, y), (5.15, y - 0.45), encoder, logvar)
    _arrow(ax, (5.15, y + 0.45), (6.15, y), mu, reparam)
    _arrow(ax, (5.15, y - 0.45), (6.15, y), logvar, reparam)
    _arrow(ax, (6.15, 0.55), (6.15, y), eps, reparam)
    _arrow(ax, (6.15, y), (7.05, 2.75), reparam, decoder, label="$z$", label_xy=(6.5, 2.55))
    _arrow(ax, (7.05, 2.75), (7.05, 1.1), decoder, x_hat)
    return fig


def gan_loop_diagram() -> Figure:
    """One GAN training step (chapter 3, section 3.1): the D update and the G update.

    The fake batch reaches the discriminator twice: detached for D's loss, so that no gradient
    reaches G, and attached for G's loss, whose gradient flows back through D (whose weights that
    step does not change) into G.
    """
    fig, ax = _canvas(GAN_SIZE)
    noise = _box(ax, (0.55, 2.6), 0.9, 0.45, r"$z \sim \mathcal{N}(0, I)$", LATENT, fontsize=SMALL)
    generator = _box(ax, (1.95, 2.6), 1.05, 0.6, "generator\n" + r"$G_\theta$", NETWORK)
    fake = _box(ax, (3.35, 2.6), 0.9, 0.45, r"fake $x = G(z)$", DATA, fontsize=SMALL)
    real = _box(ax, (3.35, 0.75), 0.9, 0.45, "real $x$", DATA, fontsize=SMALL)
    discriminator = _box(ax, (5.05, 1.65), 1.15, 0.6, "discriminator\n" + r"$D_\phi$", NETWORK)
    d_loss = _box(ax, (6.95, 0.75), 1.75, 0.6,
                  "D loss\n" + r"$-\log D(x) - \log(1 - D(G(z)))$", LOSS, fontsize=SMALL)
    g_loss = _box(ax, (6.95, 2.6), 1.75, 0.6, "G loss (non-saturating)\n" + r"$-\log D(G(z))$",
                  LOSS, fontsize=SMALL)

    _arrow(ax, (0.55, 2.6), (1.95, 2.6), noise, generator)
    _arrow(ax, (1.95, 2.6), (3.35, 2.6), generator, fake)
    _arrow(ax, (3.35, 2.6), (5.05, 1.65), fake, discriminator, rad=-0.1,
           label="D update: fake.detach()\nG update: fake", label_xy=(4.1, 1.95), ha="right")
    _arrow(ax, (3.35, 0.75), (5.05, 1.65), real, discriminator, rad=0.1)
    _arrow(ax, (5.05, 1.65), (6.95, 0.75), discriminator, d_loss, rad=0.1)
    _arrow(ax, (5.05, 1.65), (6.95, 2.6), discriminator, g_loss, rad=-0.1)
    # the gradient of G's loss: back through D (frozen for this step), then into G
    _arrow(ax, (6.95, 2.6), (5.05, 1.65), g_loss, discriminator, rad=0.35, color=GRADIENT, linestyle="--")
    _arrow(ax, (5.05, 1.65), (1.95, 2.6), discriminator, generator, rad=0.45, color=GRADIENT,
           linestyle="--", label="gradient of G loss: back through $D$ (not stepped) into $G$",
           label_xy=(3.55, 3.25))
    ax.text(5.75, 0.2, "D update: steps $D$ only; no gradient reaches $G$ (detached)",
            ha="center", va="center", fontsize=SMALL)
    return fig


def ddpm_chain_diagram() -> Figure:
    """The DDPM chain (chapter 4, sections 4.1 and 4.3): q forward, p_theta backward.

    q(x_t | x_{t-1}) is fixed and adds a little noise; p_theta(x_{t-1} | x_t) is learned and removes it.
    """
    fig, ax = _canvas(DDPM_SIZE)
    names = ["$x_0$", "$x_1$", r"$\cdots$", "$x_{t-1}$", "$x_t$", r"$\cdots$", "$x_T$"]
    xs = [0.55 + 1.15 * i for i in range(len(names))]
    y = 1.3
    nodes = []
    for x, name in zip(xs, names):
        if name == r"$\cdots$":
            ax.text(x, y, name, ha="center", va="center", fontsize=FONTSIZE + 2)
            nodes.append(None)
        else:
            nodes.append(_node(ax, (x, y), name, color=DATA if name == "$x_0$" else LATENT, radius=0.3))
    for i in range(len(names) - 1):
        _arrow(ax, (xs[i] + 0.3, y + 0.08), (xs[i + 1] - 0.3, y + 0.08), nodes[i], nodes[i + 1], rad=-0.45)
        _arrow(ax, (xs[i + 1] - 0.3, y - 0.08), (xs[i] + 0.3, y - 0.08), nodes[i + 1], nodes[i], rad=-0.45,
               color="#1f5fa8", linestyle="--")
    middle = (xs[3] + xs[4]) / 2
    ax.text(middle, y + 0.72, r"$q(x_t \mid x_{t-1})$", ha="center", va="center", fontsize=FONTSIZE + 1)
    ax.text(middle, y - 0.72, r"$p_\theta(x_{t-1} \mid x_t)$", ha="center", va="center",
            fontsize=FONTSIZE + 1, color="#1f5fa8")
    ax.text(xs[1], y + 0.72, "forward: fixed, adds noise", ha="center", va="center", fontsize=SMALL)
    ax.text(xs[1], y - 0.72, "reverse: learned, removes noise", ha="center", va="center", fontsize=SMALL,
            color="#1f5fa8")
    ax.text(xs[0], 0.18, "a data image", ha="center", va="center", fontsize=SMALL)
    ax.text(xs[-1], 0.18, r"$\approx \mathcal{N}(0, I)$", ha="center", va="center", fontsize=SMALL)
    return fig


def unet_diagram(cross_attention: bool = True) -> Figure:
    """The U-Net that predicts the noise (chapter 4), with ``UNetConfig``'s default three levels.

    Down path: ResBlocks, then a stride-2 convolution halving the resolution (28 -> 14 -> 7 for MNIST);
    middle: ResBlock, attention, ResBlock at 7 x 7; up path: upsampling doubling it, every ResBlock
    taking a skip activation concatenated to its input. The time embedding enters every ResBlock.
    With ``cross_attention``, the text (context) tokens that chapter 5's U-Net cross-attends to are
    drawn too, dotted, as optional.
    """
    fig, ax = _canvas(UNET_SIZE)
    levels = [("28 × 28", "C"), ("14 × 14", "2C"), ("7 × 7", "2C")]
    ys = [3.15, 2.3, 1.45]
    left, right = 1.9, 6.1
    width, height = 1.55, 0.5
    encoder, decoder = [], []
    for (resolution, channels), y in zip(levels, ys):
        encoder.append(_box(ax, (left, y), width, height, f"ResBlocks\n{resolution}, {channels} ch", NETWORK,
                            fontsize=SMALL))
        decoder.append(_box(ax, (right, y), width, height, f"ResBlocks\n{resolution}, {channels} ch", NETWORK,
                            fontsize=SMALL))
    middle = _box(ax, (4.0, 0.6), 1.9, 0.5, "middle: ResBlock,\nattention, ResBlock (7 × 7)", NETWORK,
                  fontsize=SMALL)
    x_in = _box(ax, (left, 4.05), 0.9, 0.4, "$x_t$ (stem)", DATA, fontsize=SMALL)
    x_out = _box(ax, (right, 4.05), 1.25, 0.4, r"$\hat\varepsilon$ (head)", DATA, fontsize=SMALL)
    _arrow(ax, (left, 4.05), (left, ys[0]), x_in, encoder[0])
    _arrow(ax, (right, ys[0]), (right, 4.05), decoder[0], x_out)
    for i in range(len(levels) - 1):
        _arrow(ax, (left, ys[i]), (left, ys[i + 1]), encoder[i], encoder[i + 1],
               label="downsample ÷2", label_xy=(left + 0.1, (ys[i] + ys[i + 1]) / 2), ha="left")
        _arrow(ax, (right, ys[i + 1]), (right, ys[i]), decoder[i + 1], decoder[i],
               label="upsample ×2", label_xy=(right - 0.1, (ys[i] + ys[i + 1]) / 2), ha="right")
    _arrow(ax, (left, ys[-1]), (4.0, 0.6), encoder[-1], middle, rad=0.25)
    _arrow(ax, (4.0, 0.6), (right, ys[-1]), middle, decoder[-1], rad=0.25)
    for i, y in enumerate(ys):
        _arrow(ax, (left + width / 2, y), (right - width / 2, y), encoder[i], decoder[i], color="0.35",
               label="skip (concatenate)" if i == 0 else None, label_xy=(4.0, y + 0.13), label_color="0.25")
    # the time embedding, entering every ResBlock (three arrows stand for all of them)
    time = _box(ax, (4.0, 4.05), 2.25, 0.45, "$t$ → sinusoidal embedding → MLP", NOTE, fontsize=SMALL)
    ax.text(4.0, 3.62, "added in every ResBlock", ha="center", va="center", fontsize=SMALL, color="#1f5fa8")
    _arrow(ax, (4.0, 4.05), (left, ys[0]), time, encoder[0], color="#1f5fa8", linestyle="--", rad=0.15)
    _arrow(ax, (4.0, 4.05), (right, ys[0]), time, decoder[0], color="#1f5fa8", linestyle="--", rad=-0.15)
    if cross_attention:
        text = _box(ax, (0.95, 0.6), 1.55, 0.5, "text tokens (optional)\ncross-attention", LATENT,
                    fontsize=SMALL, linestyle=":")
        _arrow(ax, (0.95, 0.6), (4.0, 0.6), text, middle, color="0.3", linestyle=":")
    return fig


def ddim_graph_diagram() -> Figure:
    """DDIM's non-Markovian forward graph beside DDPM's Markov chain (chapter 4, section 4.6).

    In DDPM each x_t depends only on x_{t-1}. In DDIM's forward process every x_{t-1} depends on x_t
    and on x_0, which is why the reverse step uses the network's prediction of x_0.
    """
    fig, ax = _canvas(DDIM_SIZE)
    names = ["$x_0$", "$x_1$", "$x_2$", "$x_3$"]

    def chain(x_start, title):
        xs = [x_start + 0.9 * i for i in range(len(names))]
        y = 1.45
        ax.text(xs[0] + 1.35, 2.7, title, ha="center", va="center", fontsize=FONTSIZE, weight="bold")
        nodes = [_node(ax, (x, y), name, color=DATA if i == 0 else LATENT) for i, (x, name) in
                 enumerate(zip(xs, names))]
        return xs, y, nodes

    # DDPM: the Markov chain of the forward process
    xs, y, nodes = chain(0.35, "DDPM: Markov")
    for i in range(len(names) - 1):
        _arrow(ax, (xs[i], y), (xs[i + 1], y), nodes[i], nodes[i + 1])
    ax.text(xs[0] + 1.35, 0.55, r"$q(x_t \mid x_{t-1})$: each step sees only the last",
            ha="center", va="center", fontsize=SMALL)
    ax.plot([3.95, 3.95], [0.3, 2.85], color="0.6", linewidth=0.8)

    # DDIM: x_{t-1} depends on x_t and on x_0 (arrows point from x_t down the chain, as in DDIM's Fig. 1)
    xs, y, nodes = chain(4.55, "DDIM: non-Markovian")
    for i in range(1, len(names) - 1):
        _arrow(ax, (xs[i + 1], y), (xs[i], y), nodes[i + 1], nodes[i])
    for i in range(1, len(names)):
        _arrow(ax, (xs[0], y), (xs[i], y), nodes[0], nodes[i], rad=0.0 if i == 1 else -0.4, color="#1f5fa8")
    ax.text(xs[0] + 1.35, 0.55, r"$q_\sigma(x_{t-1} \mid x_t, x_0)$: every step also sees $x_0$",
            ha="center", va="center", fontsize=SMALL)
    return fig
