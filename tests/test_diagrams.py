"""The concept diagrams: each returns a figure of the documented size that carries its key labels."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from coursekit import diagrams  # noqa: E402

CASES = {
    "vae_diagram": (diagrams.VAE_SIZE, [r"$p_\theta(x \mid z)$", r"$q_\phi(z \mid x)$", r"$\mu$",
                                        r"$\log \sigma^2$", r"$z = \mu + \sigma \odot \varepsilon$",
                                        r"$\varepsilon \sim \mathcal{N}(0, I)$", r"$\hat x$", "encoder", "decoder"]),
    "gan_loop_diagram": (diagrams.GAN_SIZE, ["generator", "discriminator", "real $x$", r"fake $x = G(z)$",
                                             "D loss", "G loss", "fake.detach()", "gradient of G loss"]),
    "ddpm_chain_diagram": (diagrams.DDPM_SIZE, ["$x_0$", "$x_{t-1}$", "$x_t$", "$x_T$", r"$q(x_t \mid x_{t-1})$",
                                                r"$p_\theta(x_{t-1} \mid x_t)$"]),
    "unet_diagram": (diagrams.UNET_SIZE, ["28 × 28", "14 × 14", "7 × 7", "middle", "downsample ÷2", "upsample ×2",
                                          "skip (concatenate)", "sinusoidal embedding", "cross-attention"]),
    "ddim_graph_diagram": (diagrams.DDIM_SIZE, ["DDPM: Markov", "DDIM: non-Markovian", "$x_0$", "$x_3$",
                                                r"$q_\sigma(x_{t-1} \mid x_t, x_0)$"]),
}


def _texts(fig: Figure) -> str:
    return "\n".join(text.get_text() for text in fig.findobj(Text))


@pytest.mark.parametrize("name", sorted(CASES))
def test_diagram_has_its_size_and_labels(name):
    size, labels = CASES[name]
    fig = getattr(diagrams, name)()
    try:
        assert isinstance(fig, Figure)
        assert tuple(fig.get_size_inches()) == pytest.approx(size)
        assert 7.0 <= size[0] <= 8.0  # a book column
        texts = _texts(fig)
        for label in labels:
            assert label in texts, f"{name} lacks the label {label!r}"
        assert min(text.get_fontsize() for text in fig.findobj(Text) if text.get_text()) >= 9
        fig.canvas.draw()  # every mathtext label parses
    finally:
        plt.close(fig)


def test_unet_diagram_cross_attention_is_optional():
    fig = diagrams.unet_diagram(cross_attention=False)
    try:
        assert "cross-attention" not in _texts(fig)
    finally:
        plt.close(fig)


def test_diagrams_are_deterministic():
    first, second = diagrams.ddim_graph_diagram(), diagrams.ddim_graph_diagram()
    try:
        assert _texts(first) == _texts(second)
        first.canvas.draw()
        second.canvas.draw()
        assert bytes(first.canvas.buffer_rgba()) == bytes(second.canvas.buffer_rgba())
    finally:
        plt.close(first)
        plt.close(second)
