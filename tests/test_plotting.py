import matplotlib as mpl
import matplotlib.pyplot as plt
import pytest
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


# ----------------------------------------------------------------------------- explore
def _recorder():
    calls = []

    def draw(d, method):
        calls.append((d, method))
        plt.figure()

    return calls, draw


def test_explore_static_draws_once_at_the_initial_values(capsys):
    calls, draw = _recorder()
    box = plotting.explore(
        draw, {"d": [2, 10, 100], "method": ["a", "b"]}, {"d": 10}, interactive=False
    )
    assert box is None
    assert calls == [(10, "a")]
    said = capsys.readouterr().out
    assert "Static figure at d = 10, method = a.\nIn JupyterLab" in said
    assert "\n  d in {2, 10, 100}\n  method in {a, b}" in said
    plt.close("all")


def test_explore_interactive_redraws_on_every_change(monkeypatch):
    pytest.importorskip("ipywidgets")
    calls, draw = _recorder()
    shown = []
    monkeypatch.setattr("IPython.display.display", shown.append)
    box = plotting.explore(
        draw, {"d": [2, 10, 100], "method": ["a", "b"]}, {"method": "b"}, interactive=True
    )
    assert box is None  # displayed, not returned (a returned widget would show twice)
    (box,) = shown
    slider, buttons = box.children[0].children
    assert type(slider).__name__ == "SelectionSlider"
    assert type(buttons).__name__ == "ToggleButtons"
    slider.value = 100
    buttons.value = "a"
    assert calls == [(2, "b"), (100, "b"), (100, "a")]
    plt.close("all")


def test_interactive_session_is_off_outside_a_kernel_and_under_hamlib_static(monkeypatch):
    monkeypatch.delenv("HAMLIB_STATIC", raising=False)
    assert plotting.interactive_session() is False  # pytest is not a Jupyter kernel
    monkeypatch.setenv("HAMLIB_STATIC", "1")
    assert plotting.interactive_session() is False


@pytest.mark.parametrize(
    ("controls", "initial", "exc", "match"),
    [
        ({}, None, ValueError, "controls must be a non-empty mapping"),
        ([("d", [1])], None, TypeError, "controls must be a mapping"),
        ({"d": []}, None, ValueError, r"controls\['d'\] must be a non-empty sequence"),
        ({"d": "abc"}, None, TypeError, r"controls\['d'\] must be a non-empty sequence"),
        ({"d": {1, 2}}, None, TypeError, r"controls\['d'\] must be a non-empty sequence"),
        ({"not a name": [1]}, None, ValueError, "is not a keyword name"),
        ({3: [1]}, None, TypeError, "controls: keys must be keyword names"),
        ({"d": [1, 2]}, [("d", 1)], TypeError, "initial must be a mapping"),
        ({"d": [1, 2]}, {"h": 1}, ValueError, "initial: 'h' is not one of the controls"),
        ({"d": [1, 2]}, {"d": 3}, ValueError, r"initial\['d'\] = 3 is not among its values"),
    ],
)
def test_explore_rejects_bad_input_by_name(controls, initial, exc, match):
    with pytest.raises(exc, match=match):
        plotting.explore(lambda **kw: None, controls, initial, interactive=False)


def test_explore_rejects_a_draw_that_is_not_callable():
    with pytest.raises(TypeError, match="^draw must be callable"):
        plotting.explore("plot", {"d": [1]}, interactive=False)


def test_explore_rejects_an_interactive_that_is_not_a_bool():
    calls, draw = _recorder()
    with pytest.raises(TypeError, match="^interactive must be True or False"):
        plotting.explore(draw, {"d": [1], "method": ["a"]}, interactive=1)
    assert calls == []
