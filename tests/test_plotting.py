import matplotlib as mpl
from matplotlib.colors import is_color_like

from hamlib import plotting


def test_palette_is_valid_and_distinct():
    colors = list(plotting.COLORS.values()) + plotting.CYCLE
    assert all(is_color_like(c) for c in colors)
    assert len(set(plotting.CYCLE)) == len(plotting.CYCLE)
    assert {"theory", "measured", "reference"} <= set(plotting.COLORS)


def test_use_style_sets_the_cycle_and_labelled_grid():
    with mpl.rc_context():
        mpl.rcdefaults()
        plotting.use_style()
        cycle = [c["color"] for c in mpl.rcParams["axes.prop_cycle"]]
        assert cycle == plotting.CYCLE
        assert mpl.rcParams["axes.grid"] is True
        assert mpl.rcParams["axes.spines.top"] is False
