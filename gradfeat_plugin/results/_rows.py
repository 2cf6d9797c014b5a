"""Leaderboard rows from stored records: each protocol's number belongs to the
setting that can change it, and rows are the settings the runs were made in.

A record's setting is resolved (:func:`.setting.resolved_setting`) and narrowed to
its protocol (:func:`.setting.protocol_setting`): that is its *cell*, and seeds
average within a cell only. Rows gather the cells of runs made with compatible
settings (equal wherever both say something). A cell shown in one row is not
repeated in another: a run that changed only fine-tuning's learning rate adds a
row with its fine-tuning cell alone. Cells of other rows that apply to a row (the
linear probe of a θ2 variant, which the split does not change) still enter its
gain recovered.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .setting import (
    default_setting,
    protocol_setting,
    resolved_setting,
    setting_of_config,
    setting_words,
    with_unset_keys,
    word_order,
)

#: Keys that make a row part of the Table 1 ablation: θ2's depth and the parts of
#: the network the gradient term is taken through.
ABLATION_KEYS = ("ABLATION.THETA1", "ABLATION.THETA2", "ABLATION.PROBE")
SPLIT_KEY = "MODEL.SPLIT"
INPUT_KEY = "MODEL.INPUT_SIZE"
WEIGHTS_KEY = "MODEL.WEIGHTS"
FRACTION_KEY = "DATA.LABEL_FRACTION"
INIT_KEY = "ABLATION.INIT"
#: The Table 1 settings of (θ1, θ2, ω) in the paper's order.
ABLATION_ORDER = tuple(
    (t1, t2, w)
    for t1 in ("random", "pretrained")
    for t2 in ("random", "pretrained")
    for w in ("random", "pretrained")
)
#: Kinds of rows: a main setting (one per model, weights, dataset and label
#: fraction), a member of a Table 1 ablation, any other setting.
ROW_KINDS = ("main", "ablation", "other")

Base = tuple[str, str, str, bool]


def metric_of(record: Mapping[str, Any]) -> str:
    """The row metric: lightly names kNN's accuracy ``val_knn_top1``; it shares the
    row of ``val_top1``."""
    return str(record.get("metric") or "").replace("_knn_", "_")


def _base(record: Mapping[str, Any]) -> Base:
    """What no setting can reconcile: model, dataset, metric, and whether a config
    was stored at all."""
    return (str(record.get("model") or ""), str(record.get("dataset") or ""),
            metric_of(record), bool(record.get("config")))


def compatible(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """Whether two settings agree wherever both say something."""
    return all(a[key] == b[key] for key in a.keys() & b.keys())


@dataclass(eq=False)
class Cell:
    """One protocol's number in one setting: the latest record of each seed.

    Args:
        base: Model, dataset, metric, and whether a config was stored.
        protocol: The protocol.
        setting: The resolved setting narrowed to what can change the protocol.
        records: The latest record of each seed, oldest first.
    """

    base: Base
    protocol: str
    setting: dict[str, str]
    records: list[dict[str, Any]] = field(default_factory=list)


@dataclass(eq=False)
class Row:
    """One leaderboard row.

    Args:
        base: Model, dataset, metric, and whether a config was stored.
        own: The cells this row shows, by protocol.
        shared: Cells shown in another row that apply to this one too.
        setting: What its cells' settings say, together.
        runs: The latest record of each protocol and seed of the runs that made
            it (what its costs are measured on).
        kind: One of :data:`ROW_KINDS`.
    """

    base: Base
    own: dict[str, Cell] = field(default_factory=dict)
    shared: dict[str, Cell] = field(default_factory=dict)
    setting: dict[str, str] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    kind: str = "other"

    @property
    def cells(self) -> dict[str, Cell]:
        """Every cell that applies: its own and the shared ones."""
        return {**self.shared, **self.own}

    @property
    def model(self) -> str:
        return self.base[0]

    @property
    def dataset(self) -> str:
        return self.base[1]

    @property
    def metric(self) -> str:
        return self.base[2]

    def value(self, key: str) -> Any:
        """A key's value in this row (parsed), ``None`` when no cell says."""
        text = self.setting.get(key)
        return None if text is None else json.loads(text)

    @property
    def split(self) -> list[str]:
        return list(self.value(SPLIT_KEY) or [])

    @property
    def ablation(self) -> tuple[str, str, str]:
        """(θ1, θ2, ω) of the gradient term: ``pretrained`` or ``random`` each."""
        return tuple(  # type: ignore[return-value]
            str(self.value(key) or "pretrained") for key in ABLATION_KEYS)


class Defaults:
    """The default value of each key: the config's defaults, and per model the θ2
    split and input size that its runs with an empty ``MODEL.SPLIT`` /
    ``MODEL.INPUT_SIZE`` resolved to."""

    def __init__(self, records: Sequence[Mapping[str, Any]]) -> None:
        self.config = default_setting()
        self.per_model: dict[tuple[str, str], set[str]] = {}
        for record in records:
            raw = dict(setting_of_config(record.get("config")))
            resolved = resolved_setting(record)
            for key, empty in ((SPLIT_KEY, "[]"), (INPUT_KEY, "null")):
                if raw.get(key) == empty and key in resolved:
                    model = str(record["model"])
                    self.per_model.setdefault((model, key), set()).add(resolved[key])

    def known(self, model: str, key: str) -> bool:
        """Whether the default of ``key`` is known for ``model``."""
        if key in (SPLIT_KEY, INPUT_KEY):
            return (model, key) in self.per_model
        return key in self.config

    def is_default(self, model: str, key: str, value: str) -> bool:
        if key in (SPLIT_KEY, INPUT_KEY):
            return value in self.per_model.get((model, key), ())
        return self.config.get(key) == value

    def count(self, model: str, setting: Mapping[str, str]) -> int:
        """How many keys of ``setting`` have another value than their default."""
        return sum(not self.is_default(model, k, v) for k, v in setting.items())


def _latest_cells(records: Sequence[Mapping[str, Any]]) -> tuple[
    dict[tuple, Cell], dict[tuple, dict[str, tuple]], dict[tuple, list[dict[str, Any]]]
]:
    """Cells (latest run of each seed) and, per run setting, its cell per protocol
    and its latest records."""
    resolved = [resolved_setting(record) for record in records]
    universe: dict[Base, set[str]] = {}
    for record, setting in zip(records, resolved):
        universe.setdefault(_base(record), set()).update(setting)
    latest: dict[tuple, tuple[dict[str, Any], tuple[str, int]]] = {}
    latest_of_run: dict[tuple, tuple[dict[str, Any], tuple[str, int]]] = {}
    cells: dict[tuple, Cell] = {}
    runs: dict[tuple, dict[str, tuple]] = {}
    for index, (record, setting) in enumerate(zip(records, resolved)):
        base = _base(record)
        full = with_unset_keys(setting, sorted(universe[base]))
        narrowed = protocol_setting(full, record["protocol"])
        key = (base, record["protocol"], tuple(sorted(narrowed.items())))
        run = (base, tuple(sorted(full.items())))
        cells.setdefault(key, Cell(base, record["protocol"], narrowed))
        runs.setdefault(run, {})[record["protocol"]] = key
        order = (record.get("timestamp") or "", index)
        for found, at in ((latest, key), (latest_of_run, run)):
            seed_key = (at, record["protocol"], record.get("seed"))
            if seed_key not in found or order >= found[seed_key][1]:
                found[seed_key] = (dict(record), order)
    for (key, _, _), (record, _) in sorted(latest.items(), key=lambda kv: kv[1][1]):
        cells[key].records.append(record)
    run_records: dict[tuple, list[dict[str, Any]]] = {}
    by_order = sorted(latest_of_run.items(), key=lambda kv: kv[1][1])
    for (run, _, _), (record, _) in by_order:
        run_records.setdefault(run, []).append(record)
    return cells, runs, run_records


def build_rows(records: Sequence[Mapping[str, Any]], defaults: Defaults) -> list[Row]:
    """The rows of the full leaderboard, in no particular order (see :func:`classify`).

    Runs are taken largest first (most protocols, then fewest values off their
    defaults), so that a cell is shown in the row of the run closest to the
    defaults that made it. A run joins the first row it is compatible with; a run
    compatible with none starts a row of the cells not shown yet.
    """
    cells, runs, run_records = _latest_cells(records)

    def order(item: tuple[tuple, dict[str, tuple]]) -> tuple:
        (base, full), protocols = item
        n_records = sum(len(cells[k].records) for k in protocols.values())
        return (base, -len(protocols), defaults.count(base[0], dict(full)), -n_records,
                full)

    rows: list[Row] = []
    shown: set[tuple] = set()
    for run, protocols in sorted(runs.items(), key=order):
        base = run[0]
        settings = [cells[k].setting for k in protocols.values()]
        joined = next((
            row for row in rows if row.base == base
            and all(row.cells[p] is cells[k] for p, k in protocols.items()
                    if p in row.cells)
            and all(compatible(row.setting, s) for s in settings)
        ), None)
        if joined is None:
            if all(k in shown for k in protocols.values()):
                continue
            joined = Row(base)
            rows.append(joined)
        for protocol, key in protocols.items():
            if protocol in joined.cells:
                continue
            if key in shown:
                joined.shared[protocol] = cells[key]
            else:
                joined.own[protocol] = cells[key]
                shown.add(key)
            joined.setting.update(cells[key].setting)
        joined.runs += run_records[run]
    _share_applicable(rows, list(cells.values()))
    return rows


def _share_applicable(rows: Sequence[Row], cells: Sequence[Cell]) -> None:
    """Give each row the one cell of each protocol it lacks that applies to it
    (compatible with its setting), when exactly one does."""
    for row in rows:
        for protocol in {c.protocol for c in cells} - set(row.cells):
            fitting = [
                c for c in cells if c.base == row.base and c.protocol == protocol
                and compatible(c.setting, row.setting)
            ]
            if len(fitting) == 1:
                row.shared[protocol] = fitting[0]


def is_ablation(row: Row, defaults: Defaults) -> bool:
    """Whether a row is a Table 1 ablation: θ2 not the model's default, or a random
    part in the gradient term."""
    split = row.setting.get(SPLIT_KEY)
    other_split = (split is not None and defaults.known(row.model, SPLIT_KEY)
                   and not defaults.is_default(row.model, SPLIT_KEY, split))
    return other_split or "random" in row.ablation


@dataclass
class AblationGroup:
    """Rows of one Table 1 ablation: one model, weights and dataset, every other
    setting equal, at most one row per θ2 split and (θ1, θ2, ω).

    Args:
        rows: Its rows, by ``(split, (θ1, θ2, ω))``.
        setting: What its rows say, together, without θ2's split and the ablation.
    """

    rows: dict[tuple[tuple[str, ...], tuple[str, str, str]], Row] = field(
        default_factory=dict)
    setting: dict[str, str] = field(default_factory=dict)

    @property
    def first(self) -> Row:
        return next(iter(self.rows.values()))


def _without_ablation(setting: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in setting.items()
            if k != SPLIT_KEY and k not in ABLATION_KEYS}


def _group_rows(rows: Sequence[Row], defaults: Defaults) -> list[AblationGroup]:
    """Table 1 groups: started by ablation rows, joined by the pretrained rows of
    the same setting.

    A row with a random part joins the first group it fits. A row without one
    draws nothing at random, so how random parts are drawn (``ABLATION.INIT``)
    cannot change it: it joins every group it fits (the tables of both
    initialisations show it), and starts one when it fits none and is an
    ablation itself (another θ2 depth)."""
    groups: list[AblationGroup] = []
    gradient = [r for r in rows if {"grad", "gradfeat"} & set(r.own)]
    drawn = [r for r in gradient if "random" in r.ablation]
    pretrained = [r for r in gradient if "random" not in r.ablation]

    def fits(group: AblationGroup, row: Row, slot: tuple, setting: dict) -> bool:
        return (group.first.base == row.base and slot not in group.rows
                and group.first.value(WEIGHTS_KEY) == row.value(WEIGHTS_KEY)
                and compatible(group.setting, setting))

    def add(group: AblationGroup, row: Row, slot: tuple, setting: dict) -> None:
        group.rows[slot] = row
        group.setting = {**setting, **group.setting}

    for row in drawn:
        slot, setting = (tuple(row.split), row.ablation), _without_ablation(row.setting)
        group = next((g for g in groups if fits(g, row, slot, setting)), None)
        if group is None:
            group = AblationGroup()
            groups.append(group)
        add(group, row, slot, setting)
    for row in pretrained:
        slot, setting = (tuple(row.split), row.ablation), _without_ablation(row.setting)
        setting.pop(INIT_KEY, None)
        joined = [g for g in groups if fits(g, row, slot, setting)]
        if not joined and is_ablation(row, defaults):
            joined = [AblationGroup()]
            groups.append(joined[0])
        for group in joined:
            add(group, row, slot, setting)
    return groups


def classify(rows: Sequence[Row], defaults: Defaults) -> list[AblationGroup]:
    """Set each row's kind and return the Table 1 groups. The main row of a model,
    weights, dataset and label fraction is its non-ablation row with the most
    protocols (then seeds, then fewest values off the defaults)."""
    groups = _group_rows(rows, defaults)
    members = {id(row) for group in groups for row in group.rows.values()}
    candidates: dict[tuple, list[Row]] = {}
    for row in rows:
        row.kind = "ablation" if id(row) in members else "other"
        if not is_ablation(row, defaults):
            main_key = (row.base, row.setting.get(WEIGHTS_KEY),
                        row.setting.get(FRACTION_KEY))
            candidates.setdefault(main_key, []).append(row)
    for found in candidates.values():
        best = min(found, key=lambda r: (
            -len(r.own), -sum(len(c.records) for c in r.own.values()),
            defaults.count(r.model, r.setting), sorted(r.setting.items()),
        ))
        best.kind = "main"
    return groups


#: Keys a label says whenever their value is not the default: which network it is.
ALWAYS_SAID = (WEIGHTS_KEY, *ABLATION_KEYS)


def row_labels(rows: Sequence[Row], defaults: Defaults) -> list[str]:
    """Each row's label: the model and, in brackets, the weights and the random
    parts of the gradient term when not the default, and the keys whose values
    differ between the given rows of its model and dataset, said in words where
    its value is not the default (``10 % labels``, ``θ2 random``, ``fine-tuning lr
    0.001``); results stored without a config say ``no config``. Labels that still
    coincide get a digest of the setting."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.model, row.dataset), []).append(row)
    labels: dict[int, str] = {}
    for group in groups.values():
        shown = [_shown_setting(row) for row in group]
        differing = sorted(
            {k for s in shown for k in s
             if k in ALWAYS_SAID or len({t[k] for t in shown if k in t}) > 1},
            key=word_order,
        )
        several_configs = len({row.base[3] for row in group}) > 1
        for row, setting in zip(group, shown):
            words = [
                setting_words(k, setting[k]) for k in differing
                if k in setting and not defaults.is_default(row.model, k, setting[k])
            ]
            words = _joined_random_parts(words)
            if several_configs and not row.base[3]:
                words.append("no config")
            labels[id(row)] = row.model + (f" ({'; '.join(words)})" if words else "")
    same: dict[tuple[str, str, str], list[Row]] = {}
    for row in rows:
        same.setdefault((labels[id(row)], row.dataset, row.metric), []).append(row)
    for coinciding in same.values():
        if len(coinciding) > 1:
            for row in coinciding:
                text = repr((row.base, sorted(row.setting.items())))
                labels[id(row)] += f" [{hashlib.sha256(text.encode()).hexdigest()[:8]}]"
    return [labels[id(row)] for row in rows]


#: The words of the ablation's random parts, in order.
RANDOM_PARTS = ("θ1 random", "θ2 random", "ω random")


def _joined_random_parts(words: list[str]) -> list[str]:
    """``θ1 random``, ``θ2 random`` said once: ``θ1, θ2 random``."""
    random = [w for w in RANDOM_PARTS if w in words]
    if len(random) < 2:
        return words
    at = words.index(random[0])
    rest = [w for w in words if w not in random]
    return [*rest[:at], ", ".join(w.split()[0] for w in random) + " random", *rest[at:]]


def _shown_setting(row: Row) -> dict[str, str]:
    """What a row's own cells say: the setting its label tells apart."""
    setting: dict[str, str] = {}
    for cell in row.own.values():
        setting.update(cell.setting)
    return setting
