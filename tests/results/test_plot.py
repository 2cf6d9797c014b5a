"""The leaderboard plot: one panel per model, short setting labels that do not
overlap, error bars from seeds, the full labels in the caption."""

from __future__ import annotations

import itertools

import pytest
from matplotlib.container import ErrorbarContainer
from PIL import Image

from gradfeat_plugin.config import get_cfg
from gradfeat_plugin.results import ResultsStore, leaderboard_table
from gradfeat_plugin.results.plot import (
    PLOT_MARKER,
    leaderboard_figure,
    plot_leaderboard,
)

from .records import make_run

ALL = dict(linear=0.80, grad=0.86, gradfeat=0.88, finetune=0.90, knn=0.70)


def _config(**changes) -> str:
    cfg = get_cfg()
    for key, value in changes.items():
        section, name = key.split("__")
        cfg[section][name] = value
    return cfg.dump()


@pytest.fixture()
def records(tmp_path):
    """A model with every kind of row: pretrained (3 seeds), random init, two label
    fractions, two Table 1 ablations (stored as ``evaluate`` stores them: in the
    weights column and the config), and a second model."""
    store = ResultsStore(tmp_path / "r.db")
    model = "zoo:rotation_mnist5k"
    for seed in range(3):
        shift = 0.01 * seed
        values = {p: v + shift for p, v in ALL.items()}
        store.add_run(make_run(values, model=model, seed=seed, config=_config()))
        store.add_run(make_run({p: v - 0.2 for p, v in values.items()}, model=model,
                               weights="random", seed=seed, config=_config()))
        for fraction in (0.1, 0.02):
            store.add_run(make_run(
                {p: v - fraction for p, v in values.items()}, model=model, seed=seed,
                config=_config(DATA__LABEL_FRACTION=fraction),
            ))
        store.add_run(make_run(
            {"grad": 0.9, "gradfeat": 0.91 + shift}, model=model, seed=seed,
            weights="pretrained; θ1=pretrained θ2=random ω=pretrained",
            config=_config(ABLATION__THETA2="random"),
        ))
        store.add_run(make_run(
            {"grad": 0.7, "gradfeat": 0.85}, model=model, seed=seed,
            weights="pretrained; θ1=random θ2=random ω=random",
            config=_config(ABLATION__THETA1="random", ABLATION__THETA2="random",
                           ABLATION__PROBE="random"),
        ))
        store.add_run(make_run(ALL, model="zoo:bigan_mnist5k", seed=seed,
                               config=_config(TRAIN__EPOCHS=30 + seed % 2)))
    return store.records()


def _tick_labels(axes) -> list[str]:
    return [t.get_text() for t in axes.get_yticklabels()]


def test_one_panel_per_model_with_short_setting_labels(records):
    figure = leaderboard_figure(records)
    panels = [a for a in figure.axes if a.get_title(loc="left")]
    titles = [a.get_title(loc="left") for a in panels]
    assert titles == ["zoo:bigan_mnist5k on mnist5k", "zoo:rotation_mnist5k on mnist5k"]
    bigan, rotation = panels
    assert _tick_labels(rotation) == [
        "pretrained", "10 % labels", "2 % labels", "θ2 random", "θ1,θ2,ω random",
        "random init",
    ]
    # Settings that differ in another config value say which.
    assert _tick_labels(bigan) == ["TRAIN.EPOCHS=30", "TRAIN.EPOCHS=31"]
    caption = figure.axes[-1].texts[0].get_text()
    # The caption gives each short label's full leaderboard label.
    assert ("zoo:rotation_mnist5k on mnist5k, θ2 random: zoo:rotation_mnist5k "
            "(θ2 random)") in caption
    assert "10 % labels: zoo:rotation_mnist5k (10 % labels)" in caption


def test_error_bars_are_the_std_over_seeds(records):
    table = leaderboard_table(records)
    row = next(r for r in table.rows
               if r[0] == "zoo:rotation_mnist5k")
    linear = row[table.columns.index("linear")]
    assert linear.n == 3 and linear.std == pytest.approx(1.0)
    rotation = leaderboard_figure(table).axes[1]
    widths = []
    for container in rotation.containers:
        if isinstance(container, ErrorbarContainer):
            (segments,) = [c.get_segments() for c in container.lines[2]]
            widths += [seg[1][0] - seg[0][0] for seg in segments]
    assert 2 * linear.std == pytest.approx(widths[0])
    assert len(widths) == 5 * 4 + 2 * 2  # every bar of the rotation panel


def test_labels_fit_and_do_not_overlap(records):
    figure = leaderboard_figure(records)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    frame = figure.bbox
    texts = []
    for axes in figure.axes:
        if axes.axison:
            low, high = sorted(axes.get_xlim())
            texts += [t for t in axes.get_yticklabels() if t.get_text()]
            # Tick labels outside the view are not drawn.
            texts += [t for t in axes.get_xticklabels()
                      if t.get_text() and low <= t.get_position()[0] <= high]
        texts += [t for t in (axes.title, axes._left_title, axes.xaxis.label)
                  if t.get_text()]
        texts += axes.texts
    texts += [t for legend in figure.legends for t in legend.get_texts()]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    for text, box in boxes:
        assert frame.x0 - 1 <= box.x0 and box.x1 <= frame.x1 + 1, text
        assert frame.y0 - 1 <= box.y0 and box.y1 <= frame.y1 + 1, text
    overlapping = [
        (a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2)
        if box_a.overlaps(box_b)
    ]
    assert not overlapping
    # The value printed at each bar's end stays clear of the others too.
    for axes in figure.axes[:-1]:
        values = [t.get_window_extent(renderer) for t in axes.texts]
        assert values and not any(
            a.overlaps(b) for a, b in itertools.combinations(values, 2)
        )


def test_plot_is_written_with_its_marker(records, tmp_path):
    path = tmp_path / "board.png"
    plot_leaderboard(records, path)
    with Image.open(path) as image:
        assert image.info.get("Software") == PLOT_MARKER
        width, height = image.size
    assert width == 1500 and height > 1000
    with pytest.raises(ValueError, match="format 'gif'"):
        plot_leaderboard(records, tmp_path / "board.gif")
