"""The leaderboard's figures: bars per model with short labels wrapped between words,
accuracy against the label fraction, the Table 1 ablation grid; every accuracy axis
from 0, no text over other text, a bounded image size."""

from __future__ import annotations

import itertools
import re

import pytest
from matplotlib import colormaps
from matplotlib.colors import to_rgba
from matplotlib.container import ErrorbarContainer
from matplotlib.patches import Rectangle
from PIL import Image

from gradfeat_plugin.config import get_cfg
from gradfeat_plugin.results import ResultsStore, leaderboard_table
from gradfeat_plugin.results._figure import table_of, table_rows, wrap_label, wrap_words
from gradfeat_plugin.results.cli import leaderboard_main
from gradfeat_plugin.results.plot import (
    PLOT_MARKER,
    ablation_figure,
    figure_files,
    label_fraction_figure,
    leaderboard_figure,
    plot_leaderboard,
)

from .records import make_config, make_run, study

ALL = dict(linear=0.80, grad=0.86, gradfeat=0.88, finetune=0.90, knn=0.70)
ROTATION = "zoo:rotation_mnist5k"
#: The Table 1 ablation of one model: (θ1, θ2, ω) -> split -> (grad, gradfeat).
ABLATION = {
    ("pretrained", "pretrained", "pretrained"): {
        "layer3.0": (0.90, 0.91), "layer2.0,layer3.0": (0.92, 0.93)},
    ("pretrained", "random", "pretrained"): {
        "layer3.0": (0.85, 0.89), "layer2.0,layer3.0": (0.80, 0.88)},
    ("pretrained", "pretrained", "random"): {"layer3.0": (0.87, 0.86)},
    ("random", "random", "random"): {
        "layer3.0": (0.40, 0.75), "layer2.0,layer3.0": (0.45, 0.77)},
}
#: The same θ2's linear probe and fine-tuning.
# The linear probe reads the pooled features: the same whatever θ2 is.
REFERENCE = {"layer3.0": (0.70, 0.95), "layer2.0,layer3.0": (0.70, 0.97)}


def _config(**changes) -> str:
    cfg = get_cfg()
    for key, value in changes.items():
        section, name = key.split("__")
        cfg[section][name] = value
    return cfg.dump()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ResultsStore:
    """A model with every kind of row: pretrained (3 seeds), random init at two label
    fractions, two more label fractions, two Table 1 ablations (stored as
    ``evaluate`` stores them: in the weights column and the config), and a second
    model."""
    store = ResultsStore(tmp_path_factory.mktemp("plot") / "r.db")
    for seed in range(3):
        shift = 0.01 * seed
        values = {p: v + shift for p, v in ALL.items()}
        store.add_run(make_run(values, model=ROTATION, seed=seed, config=_config()))
        for fraction in (1.0, 0.1):
            store.add_run(make_run(
                {p: v - 0.2 - fraction / 10 for p, v in values.items()}, model=ROTATION,
                weights="random", seed=seed,
                config=_config(DATA__LABEL_FRACTION=fraction, MODEL__WEIGHTS="random"),
            ))
        for fraction in (0.1, 0.02):
            store.add_run(make_run(
                {p: v - fraction for p, v in values.items()}, model=ROTATION, seed=seed,
                config=_config(DATA__LABEL_FRACTION=fraction),
            ))
        store.add_run(make_run(
            {"grad": 0.9, "gradfeat": 0.91 + shift}, model=ROTATION, seed=seed,
            weights="pretrained; θ1=pretrained θ2=random ω=pretrained",
            config=_config(ABLATION__THETA2="random"),
        ))
        store.add_run(make_run(
            {"grad": 0.7, "gradfeat": 0.85}, model=ROTATION, seed=seed,
            weights="pretrained; θ1=random θ2=random ω=random",
            config=_config(ABLATION__THETA1="random", ABLATION__THETA2="random",
                           ABLATION__PROBE="random"),
        ))
        store.add_run(make_run(ALL, model="zoo:bigan_mnist5k", seed=seed,
                               config=_config(TRAIN__EPOCHS=30 + seed % 2)))
    return store


@pytest.fixture(scope="module")
def records(store):
    return store.records()


@pytest.fixture(scope="module")
def bars(records):
    return leaderboard_figure(records)


def _ablation_run(setting, split, values, seed):
    t1, t2, w = setting
    ablated = "random" in setting
    return make_run(
        {p: v + 0.01 * seed for p, v in values.items()}, model="zoo:tiny", seed=seed,
        split=split, epochs=10,
        weights=f"pretrained; θ1={t1} θ2={t2} ω={w}" if ablated else "pretrained",
        config=_config(MODEL__SPLIT=split.split(","), ABLATION__THETA1=t1,
                       ABLATION__THETA2=t2, ABLATION__PROBE=w),
    )


@pytest.fixture(scope="module")
def ablation_records(tmp_path_factory):
    """Table 1 on two θ2 splits (two seeds; the all-random setting on the deeper
    split one seed; one setting only on the shallow split), and a 30-epoch run of
    another setting that the grid leaves out."""
    store = ResultsStore(tmp_path_factory.mktemp("ablation") / "r.db")
    for seed in range(2):
        for setting, by_split in ABLATION.items():
            for split, (grad, gradfeat) in by_split.items():
                if setting[0] == "random" and split != "layer3.0" and seed:
                    continue
                values = dict(grad=grad, gradfeat=gradfeat)
                if "random" not in setting:
                    values.update(zip(("linear", "finetune"), REFERENCE[split]))
                store.add_run(_ablation_run(setting, split, values, seed))
        store.add_run(make_run(
            dict(linear=0.5, grad=0.5, gradfeat=0.5, finetune=0.5), model="zoo:tiny",
            seed=seed, split="layer3.0", epochs=30,
            config=_config(MODEL__SPLIT=["layer3.0"], TRAIN__EPOCHS=30),
        ))
    return store.records()


def _panels(figure) -> dict[str, object]:
    """Axes by their left title."""
    return {a.get_title(loc="left"): a for a in figure.axes if a.get_title(loc="left")}


def _tick_labels(axes) -> list[str]:
    return [t.get_text() for t in axes.get_yticklabels()]


def _words(text: str) -> list[str]:
    return re.split(r"[\s,]+", text)


def test_one_panel_per_model_with_short_labels_wrapped_between_words(bars):
    panels = _panels(bars)
    assert sorted(panels) == [
        "zoo:bigan_mnist5k on mnist5k", "zoo:rotation_mnist5k on mnist5k"]
    rotation = _tick_labels(panels["zoo:rotation_mnist5k on mnist5k"])
    expected = ["pretrained", "10 % labels", "2 % labels", "θ2 random",
                "θ1,θ2,ω random", "random init", "random init, 10 % labels"]
    # Lines break between words: no word is cut.
    assert [_words(label) for label in rotation] == [_words(e) for e in expected]
    assert [label.replace("\n", " ") for label in rotation] == expected
    # Settings that differ in another config value say which, as a reader says it.
    bigan = _tick_labels(panels["zoo:bigan_mnist5k on mnist5k"])
    assert bigan == ["30 epochs", "31 epochs"]
    # No caption repeats the rows' full labels.
    texts = [t.get_text() for t in bars.findobj(lambda a: hasattr(a, "get_text"))]
    assert not any("DATA.LABEL_FRACTION" in text for text in texts)


def test_labels_wrap_only_between_words():
    label = "θ1,θ2,ω random, split layer1.0,layer2.0,layer3.0, 10 % labels, 30 epochs"
    wrapped = wrap_label(label, 26)
    assert wrapped == ("θ1,θ2,ω random,\nsplit layer1.0,layer2.0,\nlayer3.0,\n"
                       "10 % labels, 30 epochs")
    assert all(len(line) <= 26 for line in wrapped.splitlines())
    # A word longer than the line keeps a line of its own, whole.
    assert wrap_words("a_checkpoint_name_longer_than_that.pt", 10) == \
        "a_checkpoint_name_longer_than_that.pt"


def test_accuracy_axes_start_at_zero(bars, records):
    for axes in _panels(bars).values():
        low, high = axes.get_xlim()
        assert low == 0 and high >= 100
        bars_drawn = [p for p in axes.patches if isinstance(p, Rectangle)]
        assert bars_drawn and all(p.get_x() == 0 for p in bars_drawn)
    fractions = label_fraction_figure(records)
    for axes in _panels(fractions).values():
        low, high = axes.get_ylim()
        assert low == 0 and high >= 100


def test_error_bars_are_the_std_over_seeds(records):
    table = leaderboard_table(records)
    row = next(r for r in table.rows
               if r[0] == "zoo:rotation_mnist5k")
    linear = row[table.columns.index("linear")]
    assert linear.n == 3 and linear.std == pytest.approx(1.0)
    rotation = _panels(leaderboard_figure(table))["zoo:rotation_mnist5k on mnist5k"]
    widths = []
    for container in rotation.containers:
        if isinstance(container, ErrorbarContainer):
            (segments,) = [c.get_segments() for c in container.lines[2]]
            widths += [seg[1][0] - seg[0][0] for seg in segments]
    assert 2 * linear.std == pytest.approx(widths[0])
    assert len(widths) == 5 * 5 + 2 * 2  # every bar of the rotation panel
    bar = next(p for p in rotation.patches if isinstance(p, Rectangle))
    assert bar.get_width() == pytest.approx(linear.mean)


def _legend_colours(figure) -> dict[str, tuple]:
    (legend,) = figure.legends
    handles = legend.legend_handles
    return {
        text.get_text(): tuple(
            (h.get_facecolor() if hasattr(h, "get_facecolor") else h.get_color())
        )
        for text, h in zip(legend.get_texts(), handles)
    }


def test_label_fraction_lines_per_protocol(records, bars):
    figure = label_fraction_figure(records)
    panels = _panels(figure)
    # The settings run at several label fractions; pretrained before random.
    assert list(panels) == ["zoo:rotation_mnist5k on mnist5k",
                            "zoo:rotation_mnist5k on mnist5k\nrandom init"]
    pretrained, random = panels.values()
    colours = _legend_colours(bars)
    for protocol, value in ALL.items():
        (line,) = [ln for ln in pretrained.lines if ln.get_label() == protocol]
        assert list(line.get_xdata()) == pytest.approx([2, 10, 100])
        # Seeds add 0, 1 and 2 points: the mean is one point up.
        expected = [100 * (value - f) + 1 for f in (0.02, 0.1, 0.0)]
        assert list(line.get_ydata()) == pytest.approx(expected)
        # A protocol has the bars' colour.
        assert to_rgba(line.get_color()) == pytest.approx(colours[protocol])
        (line,) = [ln for ln in random.lines if ln.get_label() == protocol]
        assert list(line.get_ydata()) == pytest.approx(
            [100 * (value - 0.2 - f / 10) + 1 for f in (0.1, 1.0)])
    assert [t.get_text() for t in pretrained.get_xticklabels()] == [
        "2 %", "10 %", "100 %"]


def _grid_cells(axes, labelled) -> dict[tuple[str, str], tuple[str, Rectangle]]:
    """(row label, split) -> (the cell's text, its rectangle), as a reader finds
    them: the row by the tick label of the leftmost grid (``labelled``), the column
    by the split above it."""
    rows = dict(zip(labelled.get_yticks(), _tick_labels(labelled)))
    columns = {round(x - 0.5): t.get_text().replace("\n", "")
               for x, t in zip(axes.get_xticks(), axes.get_xticklabels())}
    cells = {}
    for text in axes.texts:
        x, y = text.get_position()
        cells[(rows[y], columns[round(x - 0.5)])] = (text.get_text(),
                                                     _cell_of(axes, text))
    return cells


def _cell_of(axes, text) -> Rectangle:
    """The rectangle a cell's text is centred in."""
    x, y = text.get_position()
    (patch,) = [p for p in axes.patches
                if p.get_x() + 0.5 == pytest.approx(x)
                and p.get_y() + 0.5 == pytest.approx(y)]
    return patch


def test_ablation_grid_cells(ablation_records):
    figure = ablation_figure(ablation_records)
    panels = {a.get_title(): a for a in figure.axes if a.get_title()}
    assert list(panels) == ["grad (gradient term alone)", "gradfeat (full model)"]
    (suptitle,) = [s.get_suptitle() for s in figure.subfigs if s.get_suptitle()]
    assert suptitle == "Table 1 ablation: zoo:tiny on mnist5k (10 epochs)"
    grad = panels["grad (gradient term alone)"]
    # The paper's row order, then the references; the shallow split first.
    assert _tick_labels(grad) == [
        "θ1 random · θ2 random · ω random",
        "θ1 pretrained · θ2 random · ω pretrained",
        "θ1 pretrained · θ2 pretrained · ω random",
        "θ1 pretrained · θ2 pretrained · ω pretrained",
        "linear probe (activations)", "fine-tuning",
    ]
    viridis = colormaps["viridis"]
    for index, axes in enumerate(panels.values()):
        cells = _grid_cells(axes, grad)
        for (t1, t2, w), by_split in ABLATION.items():
            label = f"θ1 {t1} · θ2 {t2} · ω {w}"
            for split in REFERENCE:
                text, patch = cells[(label, split)]
                if split not in by_split:
                    assert text == "not run"
                    continue
                one_seed = t1 == "random" and split != "layer3.0"
                mean = 100 * by_split[split][index] + (0 if one_seed else 0.5)
                assert text.splitlines()[0] == f"{mean:.1f}"
                assert text.endswith("(n=1)") == one_seed
                # One colour scale from 0 to 100 % for every cell.
                assert patch.get_facecolor() == pytest.approx(viridis(mean / 100))
        for reference, (name, _) in enumerate(
                (("linear probe (activations)", 0), ("fine-tuning", 1))):
            for split, values in REFERENCE.items():
                text, _ = cells[(name, split)]
                assert text == f"{100 * values[reference] + 0.5:.1f}\n± 0.7"


def _drawn_texts(figure):
    """Every text the figure draws."""
    texts: list = []
    for axes in figure.axes:
        if axes.axison:
            for axis, limits in ((axes.xaxis, axes.get_xlim()),
                                 (axes.yaxis, axes.get_ylim())):
                low, high = sorted(limits)
                # Tick labels outside the view are not drawn.
                texts += [t for tick, t in zip(axis.get_majorticklocs(),
                                               axis.get_majorticklabels())
                          if t.get_text() and low <= tick <= high]
                texts += [axis.label] if axis.label.get_text() else []
        texts += [t for t in (axes.title, axes._left_title, axes._right_title)
                  if t.get_text()]
        texts += axes.texts
    for part in [figure, *figure.subfigs]:
        texts += [t for t in part.texts if t.get_text()]  # suptitles too
        for legend in part.legends:
            texts += [*legend.get_texts(), legend.get_title()]
    return texts


@pytest.mark.parametrize("draw", ["bars", "label_fraction", "ablation"])
def test_text_fits_and_does_not_overlap(draw, records, bars, ablation_records):
    figure = {
        "bars": lambda: bars,
        "label_fraction": lambda: label_fraction_figure(records),
        "ablation": lambda: ablation_figure(ablation_records),
    }[draw]()
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    frame = figure.bbox
    boxes = [(t.get_text(), t.get_window_extent(renderer))
             for t in _drawn_texts(figure)]
    assert len(boxes) > 20
    for text, box in boxes:
        assert frame.x0 - 1 <= box.x0 and box.x1 <= frame.x1 + 1, text
        assert frame.y0 - 1 <= box.y0 and box.y1 <= frame.y1 + 1, text
    overlapping = [
        (a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2)
        if box_a.overlaps(box_b)
    ]
    assert not overlapping
    if draw == "ablation":  # each number inside its cell
        for axes in figure.axes:
            for text in axes.texts:
                cell = _cell_of(axes, text).get_window_extent(renderer)
                box = text.get_window_extent(renderer)
                assert cell.x0 < box.x0 and box.x1 < cell.x1, text.get_text()
                assert cell.y0 < box.y0 and box.y1 < cell.y1, text.get_text()


def test_figures_are_written_with_their_marker_and_a_bounded_size(store, tmp_path):
    records = store.records()
    files = figure_files(tmp_path / "board.png", records)
    assert files == {name: str(tmp_path / f"board{suffix}.png") for name, suffix in (
        ("bars", ""), ("label_fraction", "_label_fraction"), ("ablation", "_ablation"))}
    for name, path in files.items():
        plot_leaderboard(records, path, figure=name)
        with Image.open(path) as image:
            assert image.info.get("Software") == PLOT_MARKER
            width, height = image.size
        assert 600 <= width <= 2000 and 400 <= height <= 2000, (name, image.size)
    with pytest.raises(ValueError, match="format 'gif'"):
        plot_leaderboard(records, tmp_path / "board.gif")
    with pytest.raises(ValueError, match="unknown figure 'pie'"):
        plot_leaderboard(records, tmp_path / "pie.png", figure="pie")


def test_every_bar_is_as_high_in_every_panel(bars):
    bars.canvas.draw()
    heights = [p.get_window_extent().height for axes in _panels(bars).values()
               for p in axes.patches if isinstance(p, Rectangle)]
    # The second θ2 split's row shares the first one's linear probe: no bar of its own.
    assert len(heights) == 5 * 5 + 2 * 2 + 2 * 5 - 1
    assert max(heights) < 1.03 * min(heights)


def test_bars_fill_two_columns_not_one_tall_one():
    store_records = []
    for index in range(6):
        for seed in range(2):
            store_records += [
                {**r, "timestamp": f"t{seed}"}
                for r in make_run(ALL, model=f"zoo:m{index}", seed=seed)
            ]
    figure = leaderboard_figure(store_records)
    width, height = figure.get_size_inches()
    assert width <= 13.4 and height <= width
    figure.canvas.draw()
    lefts = {round(a.get_window_extent().x0) for a in figure.axes}
    assert len(lefts) == 2


def test_plot_option_writes_each_figure_beside_the_bars(store, tmp_path, capsys):
    foreign = tmp_path / "board_ablation.png"
    foreign.write_bytes(b"not ours")
    argv = ["--results", str(store.path), "--plot", str(tmp_path / "board.png")]
    assert leaderboard_main(argv) == 2
    assert "refusing to replace" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["board_ablation.png"]
    foreign.unlink()
    assert leaderboard_main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "board.png", "board_ablation.png", "board_label_fraction.png"]


def test_each_bar_group_is_labelled_by_its_own_theta2_and_the_ablation_init():
    """The 10-epoch row at layer3 shows the linear probe it shares with the run at
    layer2, layer3 (the later record of that cell): its label still says layer3.
    A config without ABLATION.INIT had the default initialisation: unlabelled,
    while the ntk rows say so."""
    records = study()
    records += make_run({"grad": 0.82, "gradfeat": 0.83}, split="layer3",
                        weights="pretrained; θ1=pretrained θ2=random ω=pretrained",
                        config=make_config(TRAIN__EPOCHS=10, MODEL__SPLIT=["layer3"],
                                           ABLATION__THETA2="random",
                                           ABLATION__INIT="ntk"))
    rows = table_rows(table_of(records))
    assert [(row.short, row.split) for row in rows] == [
        ("split layer3, 30 epochs", "layer3"),
        ("split layer3, 10 % labels, 30 epochs", "layer3"),
        ("split layer3", "layer3"),
        ("θ2 random, split layer3", "layer3"),
        ("θ1,θ2,ω random, split layer3", "layer3"),
        ("split layer2,layer3", "layer2,layer3"),
        ("θ2 random, split layer2,layer3", "layer2,layer3"),
        ("θ2 random, split layer3, ABLATION.INIT=ntk", "layer3"),
    ]
