"""The course's figure style: sizes that fit the book's column, fonts that stay legible, retina output."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from coursekit import plotting  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_rc():
    with matplotlib.rc_context():
        yield
    plt.close("all")


def test_use_course_style_sets_the_rc_params():
    applied = plotting.use_course_style()
    assert applied == plotting.COURSE_STYLE
    assert matplotlib.rcParams["figure.dpi"] == plotting.FIGURE_DPI
    assert tuple(matplotlib.rcParams["figure.figsize"]) == (plotting.FIGURE_WIDTH, 3.6)
    # The smallest text of the style, on a phone: a FIGURE_WIDTH figure shrunk to a 360 px column.
    smallest = min(matplotlib.rcParams[key] for key in ("font.size", "axes.labelsize", "xtick.labelsize",
                                                         "ytick.labelsize", "legend.fontsize"))
    assert smallest >= 10
    phone_px = smallest * plotting.FIGURE_DPI / 72 * 360 / (plotting.FIGURE_WIDTH * plotting.FIGURE_DPI)
    assert phone_px >= 7.5


def test_retina_only_inside_a_notebook_kernel():
    # Outside a kernel use_course_style must not create an IPython shell as a side effect.
    plotting.use_course_style(retina=True)
    from IPython import get_ipython

    assert get_ipython() is None
    assert not plotting._in_notebook()


def test_fit_width_scales_down_and_keeps_the_aspect_ratio():
    assert plotting.fit_width(4.0, 2.0) == (4.0, 2.0)
    width, height = plotting.fit_width(16.0, 4.0)
    assert width == pytest.approx(plotting.MAX_FIGURE_WIDTH)
    assert width / height == pytest.approx(4.0)
    with pytest.raises(ValueError, match="positive figure size"):
        plotting.fit_width(0.0, 3.0)


@pytest.mark.parametrize("count", [4, 8, 16, 32])
def test_image_helpers_never_draw_wider_than_the_column(count):
    images = torch.rand(count, 1, 28, 28)
    ax = plotting.show_images(images, nrow=count)
    assert ax.figure.get_size_inches()[0] <= plotting.MAX_FIGURE_WIDTH + 1e-9
    fig = plotting.side_by_side({"input": images, "output": images})
    assert fig.get_size_inches()[0] <= plotting.MAX_FIGURE_WIDTH + 1e-9
    assert fig.get_size_inches()[0] == pytest.approx(min(plotting.MAX_FIGURE_WIDTH, 0.8 * count + 1.2))
