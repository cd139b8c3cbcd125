"""Study recipes: YAML files that say what to run, validated on load.

A recipe is data only: which bundle, which data, which grid or search space, how many repeats.
It is read with ``yaml.safe_load`` (no Python objects can be built from it) and checked before
anything runs: an unknown key, a missing key or a value of the wrong type is a one-line
:class:`~seglab.errors.SeglabError` naming the key and the file. Config ids (``overrides``,
grid and search-space keys) are checked against the bundle later, by the runner, which has the
bundle at hand.

Kinds (``kind:``):

``tiling``
    Study A's Table 2: every combination of ``grid`` (config ids -> lists of values, e.g.
    ``network_name`` x ``tiling_preset``) x ``arms`` x ``repeats`` is one child training.
``ablation``
    Study B's label budget: ``base`` label sets of one cell plus ``k`` sets of another for each
    ``k`` in ``added.sets``, x ``arms`` (e.g. with and without the intensity remap) x
    ``repeats``.
``search``
    An Optuna study over config ids (``search.space``), each trial one child training.
``postprocess-search``
    An Optuna study over the instance-splitting parameters against labelled stacks.

Relative paths in a recipe are taken from the current folder (run from the repository root).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seglab.errors import DataFileError, SeglabError

__all__ = [
    "KINDS",
    "AblationRecipe",
    "Arm",
    "PostprocessSearchRecipe",
    "Recipe",
    "SearchParameter",
    "SearchRecipe",
    "TilingRecipe",
    "load_recipe",
    "parse_recipe",
]

KINDS = ("tiling", "ablation", "search", "postprocess-search")
#: Pruners a search recipe may name.
PRUNERS = ("median", "none")
#: Keys every recipe may have.
_COMMON = {
    "kind": "what to run: " + ", ".join(KINDS),
    "name": "the study's name (parent run name, Optuna study name)",
    "description": "free text",
    "experiment": "MLflow experiment of the parent and child runs (default 'studies')",
    "bundle": "bundle name (lung, mito) or folder",
    "data": "training dataset folder",
    "eval_data": "labelled dataset folder for the final evaluation of every child",
    "overrides": "config ids set in every child, e.g. {epochs: 30}",
    "seed": "seed of the first repeat (repeat r uses seed + r)",
    "repeats": "trainings per combination, each with its own seed",
    "register": "register the best child's model under this name",
}


def _where(path: Path | None) -> str:
    return f" in {path}" if path is not None else ""


def _problem(where: str, key: str, message: str, fix: str) -> SeglabError:
    return SeglabError(f"recipe{where}: {key} {message}", fix)


def _check_keys(data: Mapping[str, Any], allowed: Mapping[str, str], key: str, where: str) -> None:
    unknown = [k for k in data if k not in allowed]
    if unknown:
        known = ", ".join(sorted(allowed))
        prefix = f"{key}." if key else ""
        raise _problem(
            where,
            ", ".join(f"{prefix}{k}" for k in unknown),
            "is not a recipe key" if len(unknown) == 1 else "are not recipe keys",
            f"use only {known}" + (f" under {key}" if key else ""),
        )


def _mapping(value: Any, key: str, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _problem(
            where, key, f"must be a mapping, got {type(value).__name__}", "write key: value lines"
        )
    for k in value:
        if not isinstance(k, str):
            raise _problem(where, key, f"has a non-text key {k!r}", "quote the key")
    return dict(value)


def _text(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _problem(where, key, f"must be non-empty text, got {value!r}", f"set {key}: ...")
    return value


def _integer(value: Any, key: str, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _problem(
            where, key, f"must be an integer >= {minimum}, got {value!r}", f"set e.g. {key}: 1"
        )
    return int(value)


def _number(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _problem(where, key, f"must be a number, got {value!r}", f"set e.g. {key}: 0.01")
    return float(value)


def _values(value: Any, key: str, where: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise _problem(
            where, key, f"must be a non-empty list, got {value!r}", f"write {key}: [a, b]"
        )
    return list(value)


def _overrides(value: Any, key: str, where: str) -> dict[str, Any]:
    return _mapping(value if value is not None else {}, key, where)


@dataclass(frozen=True)
class Arm:
    """One arm of a comparison: a name and the config ids it sets."""

    name: str
    overrides: dict[str, Any]


def _arms(value: Any, where: str) -> list[Arm]:
    """``arms: {name: {config id: value}}``; no arms is one unnamed arm."""
    if value is None:
        return [Arm("", {})]
    arms = _mapping(value, "arms", where)
    if not arms:
        raise _problem(where, "arms", "is empty", "name at least one arm or leave arms out")
    return [
        Arm(_text(n, "arm name", where), _overrides(o, f"arms.{n}", where)) for n, o in arms.items()
    ]


@dataclass(frozen=True)
class Recipe:
    """What every recipe has.

    Attributes
    ----------
    kind, name : str
    bundle : str
        Bundle name or folder.
    data : Path or None
        Training dataset (not used by ``postprocess-search``).
    eval_data : Path or None
    experiment : str
    overrides : dict
        Config ids set in every child.
    seed, repeats : int
    register : str or None
    description : str
    path : Path or None
        The file it was read from.
    digest : str
        SHA-256 of the recipe's content (canonical JSON), 16 hex digits: a changed recipe is a
        new study, an unchanged one resumes.
    """

    kind: str
    name: str
    bundle: str
    data: Path | None
    eval_data: Path | None = None
    experiment: str = "studies"
    overrides: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    repeats: int = 1
    register: str | None = None
    description: str = ""
    path: Path | None = None
    digest: str = ""

    def config_ids(self) -> list[str]:
        """Config ids the recipe sets (checked against the bundle by the runner)."""
        return list(self.overrides)


@dataclass(frozen=True)
class TilingRecipe(Recipe):
    """Networks x tiling presets (study A's Table 2): ``grid`` x ``arms`` x ``repeats``.

    Attributes
    ----------
    grid : dict of str to list
        Config id -> values; every combination is a child.
    arms : list of Arm
        E.g. a class-weighted-loss arm for the rare class.
    evaluate_train : bool
        Also evaluate every model on its training data (Table 2's train Dice).
    """

    grid: dict[str, list[Any]] = field(default_factory=dict)
    arms: list[Arm] = field(default_factory=lambda: [Arm("", {})])
    evaluate_train: bool = True

    def config_ids(self) -> list[str]:  # noqa: D102 - as Recipe
        ids = [*self.overrides, *self.grid]
        return ids + [k for arm in self.arms for k in arm.overrides]


@dataclass(frozen=True)
class AblationRecipe(Recipe):
    """Label budget (study B's Table 2): base sets plus ``k`` added sets for each ``k``.

    Attributes
    ----------
    base_sets : int
        Labelled slices taken from ``data`` (the base cell) in every child.
    added_data : Path
        The second cell's labelled stacks the added sets come from.
    added_sets : list of int
        The ``k`` values.
    init : str
        ``"scratch"`` or a registered model URI to fine-tune from (transfer learning).
    arms : list of Arm
        E.g. ``no-remap`` and ``remap``.
    """

    base_sets: int = 0
    added_data: Path = Path()
    added_sets: list[int] = field(default_factory=list)
    init: str = "scratch"
    arms: list[Arm] = field(default_factory=lambda: [Arm("", {})])

    def config_ids(self) -> list[str]:  # noqa: D102 - as Recipe
        return [*self.overrides, *(k for arm in self.arms for k in arm.overrides)]


@dataclass(frozen=True)
class SearchParameter:
    """One dimension of a search space.

    Attributes
    ----------
    name : str
        A config id, or a name whose options each set several config ids.
    choices : list or None
        Values of a categorical parameter.
    options : dict or None
        Option name -> config ids it sets (a categorical parameter over bundles of settings,
        e.g. ``weighted-ce: {loss_name: ce, class_balance: inverse-frequency}``).
    low, high : float or None
        Range of a numeric parameter.
    log : bool
        Sample the range on a log scale.
    integer : bool
        Integers in ``[low, high]``.
    """

    name: str
    choices: list[Any] | None = None
    options: dict[str, dict[str, Any]] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    def config_ids(self) -> list[str]:
        """Config ids this parameter sets."""
        if self.options is not None:
            return sorted({k for option in self.options.values() for k in option})
        return [self.name]


_PARAMETER_KEYS = {
    "choices": "a list of values, or a mapping option -> {config id: value}",
    "low": "lower end of a numeric range",
    "high": "upper end of a numeric range",
    "log": "sample the range on a log scale",
    "integer": "integers only",
}


def _parameter(name: str, value: Any, where: str) -> SearchParameter:
    key = f"search.space.{name}"
    spec = _mapping(value, key, where)
    _check_keys(spec, _PARAMETER_KEYS, key, where)
    if "choices" in spec:
        if set(spec) - {"choices"}:
            raise _problem(where, key, "mixes choices with a range", "give choices or low/high")
        choices = spec["choices"]
        if isinstance(choices, Mapping):
            options = {
                _text(o, f"{key} option", where): _overrides(v, f"{key}.choices.{o}", where)
                for o, v in _mapping(choices, f"{key}.choices", where).items()
            }
            if not options:
                raise _problem(where, key, "has no choices", "list at least one")
            return SearchParameter(name, options=options)
        return SearchParameter(name, choices=_values(choices, f"{key}.choices", where))
    if "low" not in spec or "high" not in spec:
        raise _problem(where, key, "needs choices, or low and high", "e.g. {low: 1e-4, high: 0.1}")
    low, high = (
        _number(spec["low"], f"{key}.low", where),
        _number(spec["high"], f"{key}.high", where),
    )
    log = spec.get("log", False)
    integer = spec.get("integer", False)
    if not isinstance(log, bool) or not isinstance(integer, bool):
        raise _problem(where, key, "log and integer must be true or false", "write log: true")
    if not low < high:
        raise _problem(where, key, f"needs low < high, got {low} and {high}", "swap them")
    if log and low <= 0:
        raise _problem(where, key, f"log range needs low > 0, got {low}", "set low: 1e-5")
    return SearchParameter(name, low=low, high=high, log=log, integer=integer)


@dataclass(frozen=True)
class SearchRecipe(Recipe):
    """An Optuna search over config ids; each trial trains one child.

    Attributes
    ----------
    space : list of SearchParameter
    trials : int
        Trials this process runs (several workers each run their own ``trials``).
    objective : str or None
        Metric of the child run to optimise (default: the bundle's final key metric,
        ``final_total_dice`` or ``final_f_score``).
    direction : {"maximize", "minimize"}
    prune_on : str or None
        Per-epoch metric reported to the pruner (default: the bundle's validation key metric).
    pruner : {"median", "none"}
    startup_trials, warmup_epochs : int
        Median pruning waits for this many finished trials, and this many epochs of a trial.
    storage : str or None
        Optuna storage: an SQLAlchemy URL, ``journal:PATH``, or None for SQLite next to the
        MLflow store (``mlruns/optuna.db``).
    sampler_seed : int
    train_best : bool
        After the trials, train the best parameters once more on ``data`` (with ``register``).
    """

    space: list[SearchParameter] = field(default_factory=list)
    trials: int = 10
    objective: str | None = None
    direction: str = "maximize"
    prune_on: str | None = None
    pruner: str = "median"
    startup_trials: int = 2
    warmup_epochs: int = 2
    storage: str | None = None
    sampler_seed: int = 0
    train_best: bool = False

    def config_ids(self) -> list[str]:  # noqa: D102 - as Recipe
        return [*self.overrides, *(k for p in self.space for k in p.config_ids())]


_SEARCH_KEYS = {
    "space": "parameter -> {choices: [...]} or {low, high, log}",
    "trials": "trials this process runs",
    "objective": "metric of the child run to optimise",
    "direction": "maximize or minimize",
    "prune_on": "per-epoch metric reported to the pruner",
    "pruner": "median or none",
    "startup_trials": "finished trials before pruning starts",
    "warmup_epochs": "epochs of a trial before it can be pruned",
    "storage": "Optuna storage URL, journal:PATH, or leave out for mlruns/optuna.db",
    "sampler_seed": "seed of the TPE sampler",
    "train_best": "train the best parameters once more and register them",
}


@dataclass(frozen=True)
class PostprocessSearchRecipe(Recipe):
    """An Optuna study over the instance-splitting parameters against labelled stacks.

    Attributes
    ----------
    maps : Path
        Folder of ``object/<name>.tif`` and ``contour/<name>.tif`` probability maps, or None
        when ``model`` segments ``data``'s images.
    model : str or None
        Registered model that makes the maps from ``data``'s images.
    space : list of SearchParameter
        Over ``object_threshold``, ``contour_threshold``, ``sigma``, ``seed_level``,
        ``min_size``.
    trials : int
    objective : {"instance_f1", "volume_fraction_error"}
    storage : str or None
    sampler_seed : int
    """

    maps: Path | None = None
    model: str | None = None
    space: list[SearchParameter] = field(default_factory=list)
    trials: int = 20
    objective: str = "instance_f1"
    storage: str | None = None
    sampler_seed: int = 0

    def config_ids(self) -> list[str]:  # noqa: D102 - no bundle config ids
        return []


SPLIT_PARAMETERS = ("object_threshold", "contour_threshold", "sigma", "seed_level", "min_size")
POSTPROCESS_OBJECTIVES = ("instance_f1", "volume_fraction_error")


def _path(value: Any, key: str, where: str) -> Path:
    return Path(_text(value, key, where))


def _digest(data: Mapping[str, Any]) -> str:
    text = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_recipe(data: Any, path: Path | None = None) -> Recipe:
    """Validate a recipe's content (as ``yaml.safe_load`` gives it) and build the recipe.

    Parameters
    ----------
    data : Any
        The loaded YAML document.
    path : Path, optional
        The file, named in error messages.

    Returns
    -------
    Recipe
        A :class:`TilingRecipe`, :class:`AblationRecipe`, :class:`SearchRecipe` or
        :class:`PostprocessSearchRecipe`.

    Raises
    ------
    SeglabError
        One line naming the key that is unknown, missing or of the wrong type.
    """
    where = _where(path)
    top = _mapping(data if data is not None else {}, "the document", where)
    kind = top.get("kind")
    if kind not in KINDS:
        raise _problem(
            where, "kind", f"must be one of {', '.join(KINDS)}, got {kind!r}", "set kind: search"
        )
    specific: dict[str, str] = {
        "tiling": {
            "grid": "config id -> list of values",
            "arms": "arm name -> config ids",
            "evaluate_train": "also evaluate on the training data",
        },
        "ablation": {
            "base": "{data: base cell, sets: labelled slices}",
            "added": "{data: second cell, sets: [k, ...]}",
            "init": "scratch or models:/NAME@ALIAS",
            "arms": "arm name -> config ids",
        },
        "search": {"search": "the search: " + ", ".join(_SEARCH_KEYS)},
        "postprocess-search": {
            "maps": "folder with object/ and contour/ probability maps",
            "model": "models:/NAME@ALIAS making the maps from data's images",
            "search": "space, trials, objective, storage, sampler_seed",
        },
    }[kind]
    _check_keys(top, {**_COMMON, **specific}, "", where)
    required = ["name"] + (["bundle", "data"] if kind != "postprocess-search" else ["data"])
    for key in required:
        if key not in top:
            raise _problem(where, key, "is missing", f"add {key}: ... to the recipe")
    common = {
        "kind": kind,
        "name": _text(top["name"], "name", where),
        "bundle": _text(top.get("bundle", "mito"), "bundle", where),
        "data": _path(top["data"], "data", where),
        "eval_data": _path(top["eval_data"], "eval_data", where) if "eval_data" in top else None,
        "experiment": _text(top.get("experiment", "studies"), "experiment", where),
        "overrides": _overrides(top.get("overrides"), "overrides", where),
        "seed": _integer(top.get("seed", 0), "seed", where),
        "repeats": _integer(top.get("repeats", 1), "repeats", where, minimum=1),
        "register": _text(top["register"], "register", where) if "register" in top else None,
        "description": str(top.get("description", "")),
        "path": path,
        "digest": _digest(top),
    }
    if kind == "tiling":
        grid = _mapping(top.get("grid", {}), "grid", where)
        if not grid:
            raise _problem(
                where, "grid", "is missing or empty", "e.g. grid: {network_name: [unet]}"
            )
        evaluate_train = top.get("evaluate_train", True)
        if not isinstance(evaluate_train, bool):
            raise _problem(where, "evaluate_train", "must be true or false", "write true")
        return TilingRecipe(
            **common,
            grid={k: _values(v, f"grid.{k}", where) for k, v in grid.items()},
            arms=_arms(top.get("arms"), where),
            evaluate_train=evaluate_train,
        )
    if kind == "ablation":
        for key in ("base", "added", "eval_data"):
            if key not in top:
                raise _problem(where, key, "is missing", f"add {key}: to the recipe")
        base = _mapping(top["base"], "base", where)
        added = _mapping(top["added"], "added", where)
        _check_keys(base, {"sets": "labelled slices of data in every child"}, "base", where)
        _check_keys(added, {"data": "second cell", "sets": "list of k"}, "added", where)
        if "sets" not in base or "data" not in added or "sets" not in added:
            raise _problem(
                where, "base.sets, added.data or added.sets", "is missing",
                "write base: {sets: 16} and added: {data: ..., sets: [0, 4, 8]}",
            )  # fmt: skip
        sets = [
            _integer(k, "added.sets", where) for k in _values(added["sets"], "added.sets", where)
        ]
        init = _text(top.get("init", "scratch"), "init", where)
        if init != "scratch" and not init.startswith("models:/"):
            raise _problem(
                where, "init", f"must be scratch or models:/NAME@ALIAS, got {init!r}",
                "register a pretrained model and name it",
            )  # fmt: skip
        return AblationRecipe(
            **common,
            base_sets=_integer(base["sets"], "base.sets", where, minimum=1),
            added_data=_path(added["data"], "added.data", where),
            added_sets=sets,
            init=init,
            arms=_arms(top.get("arms"), where),
        )
    search = _mapping(top.get("search", {}), "search", where)
    if kind == "search":
        _check_keys(search, _SEARCH_KEYS, "search", where)
        space = _mapping(search.get("space", {}), "search.space", where)
        if not space:
            raise _problem(where, "search.space", "is missing or empty", "name the parameters")
        direction = search.get("direction", "maximize")
        if direction not in ("maximize", "minimize"):
            raise _problem(
                where, "search.direction", f"is {direction!r}", "use maximize or minimize"
            )
        pruner = search.get("pruner", "median")
        if pruner not in PRUNERS:
            raise _problem(where, "search.pruner", f"is {pruner!r}", "use median or none")
        train_best = search.get("train_best", False)
        if not isinstance(train_best, bool):
            raise _problem(where, "search.train_best", "must be true or false", "write true")
        return SearchRecipe(
            **common,
            space=[_parameter(n, v, where) for n, v in space.items()],
            trials=_integer(search.get("trials", 10), "search.trials", where, minimum=1),
            objective=_optional_text(search, "objective", where),
            direction=direction,
            prune_on=_optional_text(search, "prune_on", where),
            pruner=pruner,
            startup_trials=_integer(
                search.get("startup_trials", 2), "search.startup_trials", where
            ),
            warmup_epochs=_integer(search.get("warmup_epochs", 2), "search.warmup_epochs", where),
            storage=_optional_text(search, "storage", where),
            sampler_seed=_integer(search.get("sampler_seed", 0), "search.sampler_seed", where),
            train_best=train_best,
        )
    keys = {k: _SEARCH_KEYS[k] for k in ("space", "trials", "storage", "sampler_seed")}
    keys["objective"] = " or ".join(POSTPROCESS_OBJECTIVES)
    _check_keys(search, keys, "search", where)
    space = _mapping(search.get("space", {}), "search.space", where)
    unknown = [k for k in space if k not in SPLIT_PARAMETERS]
    if not space or unknown:
        raise _problem(
            where, "search.space", f"must name split parameters, got {unknown or 'none'}",
            f"use {', '.join(SPLIT_PARAMETERS)}",
        )  # fmt: skip
    objective = search.get("objective", "instance_f1")
    if objective not in POSTPROCESS_OBJECTIVES:
        raise _problem(
            where,
            "search.objective",
            f"is {objective!r}",
            f"use {' or '.join(POSTPROCESS_OBJECTIVES)}",
        )
    if ("maps" in top) == ("model" in top):
        raise _problem(
            where, "maps or model", "must be given (one of them)",
            "give maps: FOLDER with object/ and contour/, or model: models:/NAME@ALIAS",
        )  # fmt: skip
    return PostprocessSearchRecipe(
        **common,
        maps=_path(top["maps"], "maps", where) if "maps" in top else None,
        model=_text(top["model"], "model", where) if "model" in top else None,
        space=[_parameter(n, v, where) for n, v in space.items()],
        trials=_integer(search.get("trials", 20), "search.trials", where, minimum=1),
        objective=objective,
        storage=_optional_text(search, "storage", where),
        sampler_seed=_integer(search.get("sampler_seed", 0), "search.sampler_seed", where),
    )


def _optional_text(section: Mapping[str, Any], key: str, where: str) -> str | None:
    return _text(section[key], f"search.{key}", where) if key in section else None


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read and validate a recipe file (``yaml.safe_load``: plain data only).

    Parameters
    ----------
    path : path-like
        A ``.yaml`` or ``.yml`` file.

    Returns
    -------
    Recipe

    Raises
    ------
    DataFileError
        Missing or unreadable file, or not YAML.
    SeglabError
        Invalid content (see :func:`parse_recipe`).
    """
    import yaml

    file = Path(path)
    if not file.is_file():
        raise DataFileError(f"recipe {file} not found", "pass a recipe file, e.g. pipelines/*.yaml")
    try:
        data = yaml.safe_load(file.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise DataFileError(f"recipe {file} cannot be read ({err})", "check the file") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise DataFileError(
            f"recipe {file} is not valid YAML{at}: {problem}",
            "fix the YAML (indentation, colons, quotes)",
        ) from err
    return parse_recipe(data, file)
