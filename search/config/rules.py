"""The config rules: one table of the values every key accepts, checked before anything is created.

A value no trial can use (`train.batch_size=0`, a negative learning rate, a sampler typo, a space
whose choices do not fit the key's type) used to be found out by every trial failing in turn, or
by a check written by hand in the module that reads the key (the same "whole number of 1 or
more" eleven times, `train.epochs` and `train.label_smoothing` twice with different words). Each
row of `RULES` names one key, what it accepts and why; `check_values` applies every row to the
composed config and to every value the search space can produce (both ends of a range, every
categorical choice), and each refusal is one paragraph: the key, the bad value, what is accepted.
The checks that are not one key's value (the space's own grammar, `when` links, objectives,
the final rule, sampler classes, worker combinations) run beside it in `search.checks`.

Why not Hydra's structured configs (dataclass schemas registered in the ConfigStore)? They type
a config where it is composed, and they would catch `train.batch_size=abc`, but not what this
table is for:
- the search space sets any key after composition (`+space.model.dropout={...}` adds an entry,
  and a trial is the base config with sampled values applied), so every value the space can
  produce must pass the same rule; a schema sees only the composed base config;
- a schema types a field (int, float, an Enum) but has no ranges (`>= 1`, `[0, 1)`) and no words:
  its errors are OmegaConf's ValidationError with "full_key ... object_type=..." lines, where a
  refusal here must name the accepted values and what the key does, in one paragraph;
- the groups are open on purpose: `+search.samplers.gp={_target_: ...}`, `+optimizer.X=...` for
  Keras's options, model groups with their own keys; a closed schema per group would refuse
  them or need `Any` fields, and keys a model does not have are simply skipped here;
- a schema turns `seed: ${seed}` and `${train.epochs}` interpolations and `null` defaults into
  per-field Optional/MISSING bookkeeping in every group file.
So the config stays plain YAML, and the rules are this table, read before any heavy import.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments.data.augment_options import FILL_MODES, FLIPS, PRESETS, STRENGTHS
from experiments.errors import UserInputError
from experiments.serving.export import FORMATS as EXPORT_FORMATS
from search.space.spec import Param

ENGINES = ("optuna", "keras_tuner")
TUNERS = ("random", "bayesian", "hyperband")
OBJECTIVES = ("val_accuracy", "val_loss")
DIRECTIONS = ("maximize", "minimize")
# Test metrics the final stage reports, all "higher is better"; final.champion_metric is one.
CHAMPION_METRICS = (
    "test_accuracy",
    "test_f1_macro",
    "test_f1_weighted",
    "test_precision_macro",
    "test_precision_weighted",
    "test_recall_macro",
    "test_recall_weighted",
)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Rule:
    """One key: what it accepts (a test and the words for it), why it exists, what null means."""

    key: str
    accepts: Callable[[Any], bool]
    says: str  # "a whole number of 1 or more"
    why: str = ""  # what the key does, said after the accepted values
    null: str | None = None  # what null means ("for no limit"); None: null is refused
    whole: bool = False  # a whole number: a float range in the space cannot feed it
    when: tuple[str, Any] | None = None  # checked only while that key has that value

    def refusal(self, value: Any, shown: str | None = None) -> str:
        """The one-paragraph error for `value` (`shown`: how the value came about)."""
        why = f" ({self.why})" if self.why else ""
        null = f", or null {self.null}" if self.null is not None else ""
        came = f" {shown}" if shown else ""
        return f"{self.key}={value!r}{came} must be {self.says}{why}{null}."


NAME_REFUSED = "/:.%'\""  # MLflow refuses them in model names (the final stage's, a trial's)


def _usable_name(v: Any) -> bool:
    """A name as text (Hydra reads search.study_name=42 as a number), not blank, without a
    character MLflow refuses in the model names made from it."""
    text = str(v) if isinstance(v, str | int) and not isinstance(v, bool) else ""
    return bool(text.strip()) and not any(c in text for c in NAME_REFUSED)


def name_rule(key: str, example: str, why: str, null: str | None = None) -> Rule:
    """A name that study and model names are made of. MLflow refuses / : . % ' " in a model
    name (the final stage failed after the whole search), and its search filters broke on a
    quote ("Invalid clause(s)", a WAITING trial left behind)."""
    says = f"a non-empty name without any of / : . % ' \" (MLflow's model names), e.g. {example}"
    return Rule(key, _usable_name, says, why, null=null)


def whole(key: str, low: int, high: int | None = None, why: str = "", **kw: Any) -> Rule:
    """A whole number from `low` (to `high`)."""
    says = (
        f"a whole number from {low} to {high}"
        if high is not None
        else (f"a whole number of {low} or more")
    )

    def accepts(v: Any) -> bool:
        return _is_int(v) and v >= low and (high is None or v <= high)

    return Rule(key, accepts, says, why, whole=True, **kw)


def number(
    key: str,
    low: float,
    high: float | None = None,
    why: str = "",
    *,
    low_open: bool = False,
    high_open: bool = False,
    **kw: Any,
) -> Rule:
    """A finite number in the interval from `low` to `high` (open or closed at each end)."""

    def accepts(v: Any) -> bool:
        if not _is_number(v):
            return False
        above = v > low if low_open else v >= low
        below = high is None or (v < high if high_open else v <= high)
        return above and below

    if high is None:
        says = f"a number above {low:g}" if low_open else f"a number of {low:g} or more"
    elif high_open:
        says = f"a number from {low:g} up to, not including, {high:g}"
    else:
        says = f"a number from {low:g} to {high:g}"
    return Rule(key, accepts, says, why, **kw)


def choice(key: str, accepted: tuple[Any, ...], why: str = "", **kw: Any) -> Rule:
    """One of `accepted` (compared as values: 1 is not "1", true is not 1)."""

    def accepts(v: Any) -> bool:
        return any(type(v) is type(a) and v == a for a in accepted)

    says = "one of " + ", ".join(str(a) for a in accepted)
    return Rule(key, accepts, says, why, **kw)


def boolean(key: str, why: str = "", **kw: Any) -> Rule:
    """true or false, as YAML and Hydra's command line write them (not "yes", "off" or 1)."""
    return Rule(key, lambda v: isinstance(v, bool), "true or false", why, **kw)


SEED_RANGE = "a whole number from 0 to 4294967295 (NumPy's seed range)"
FINAL = ("final.enabled", True)  # final.* is read only when the final stage runs

RULES: tuple[Rule, ...] = (
    Rule("seed", lambda v: _is_int(v) and 0 <= v < 2**32, SEED_RANGE, whole=True),
    # -- the search
    choice("search.engine", ENGINES, "choose with search=NAME"),
    whole(
        "search.n_trials",
        1,
        why="the study's total number of finished trials, counted across resumes, e.g. "
        "search.n_trials=10",
    ),
    number("search.timeout", 0, low_open=True, why="seconds", null="for no limit"),
    whole(
        "search.max_consecutive_failures",
        1,
        why="failed trials in a row that stop the sweep",
        null="to never stop",
    ),
    whole(
        "search.patience",
        1,
        why="under search.timeout, trials in a row without a gain beyond the seed noise that end "
        "the search",
        null="to search until the budget's reserve",
    ),
    boolean(
        "search.staged.enabled",
        "the staged search of transfer models (Optuna): a screen of head configurations on "
        "cached features after trial 0, then two-phase trials of the best",
    ),
    number(
        "search.staged.share",
        0,
        1,
        why="the screen's share of the search's time left after trial 0",
        low_open=True,
        high_open=True,
    ),
    whole("search.staged.trials", 1, why="a ceiling on the screen's head configurations"),
    whole("search.staged.carry", 1, why="the screen's best heads carried into two-phase trials"),
    whole(
        "search.staged.epochs",
        1,
        why="phase-1 epochs of a screen trial",
        null="for model.fine_tune.head_epochs",
    ),
    boolean(
        "search.baseline",
        "true: trial 0 of a new study is the base config's own values; false: trial 0 is the "
        "sampler's own draw",
    ),
    Rule(
        "search.seed",
        lambda v: _is_int(v) and 0 <= v < 2**32,
        SEED_RANGE,
        "the sampler's seed",
        null="(unseeded)",
        whole=True,
    ),
    # Study names become MLflow model names and are quoted in its search filters: refused up
    # front where MLflow would refuse them after the search.
    name_rule("sweep_name", "sweep_name=cifar", "the start of derived study names"),
    name_rule(
        "search.study_name",
        "search.study_name=cifar-cnn",
        "the study's name in the stores",
        null="for <sweep_name>-<fingerprint>",
    ),
    whole(
        "search.workers",
        0,
        why="how many trials train at once on this machine, each in its own worker process (1, "
        "the default, or more), or 0 to train in the sweep process itself (no isolation: a "
        "crash ends the sweep)",
    ),
    number(
        "search.trial_timeout",
        0,
        low_open=True,
        why="seconds; a trial running longer is stopped and failed",
        null="for no limit",
    ),
    whole(
        "search.worker.max_trials",
        1,
        why="trials after which a worker is replaced by a fresh process",
        null="for no limit",
    ),
    number(
        "search.worker.max_rss_mb",
        1,
        why="resident memory in MB past which a worker is replaced by a fresh process",
        null="for no limit",
    ),
    whole("search.heartbeat_interval", 1, why="seconds", null="for no heartbeat"),
    whole("search.grace_period", 1, why="seconds", null="for Optuna's default"),
    choice("search.tuner", TUNERS, "the Keras Tuner tuner"),
    whole(
        "search.bayesian.num_initial_points",
        1,
        why="random trials before the Gaussian process",
        null="for 3 x the number of parameters",
    ),
    number("search.bayesian.alpha", 0, low_open=True, why="noise added to the kernel"),
    number("search.bayesian.beta", 0, low_open=True, why="exploration weight"),
    whole("search.hyperband.max_epochs", 1, why="epochs of a bracket's last round"),
    whole("search.hyperband.factor", 2, why="each round keeps 1/factor of the trials"),
    whole(
        "search.hyperband.hyperband_iterations",
        1,
        why="brackets to run",
        null="to start new brackets until search.n_trials",
    ),
    # -- training
    choice(
        "train.objective",
        OBJECTIVES,
        "a validation metric that training reports; the objective reads validation data only",
    ),
    choice("train.direction", DIRECTIONS),
    whole("train.batch_size", 1),
    whole("train.epochs", 1),
    whole("train.verbose", 0, 2, "Keras's fit verbosity"),
    number(
        "train.label_smoothing",
        0,
        1,
        "the share of each label spread evenly over all classes; 0 is off, 0.1 is usual",
        high_open=True,
    ),
    number("optimizer.learning_rate", 0, low_open=True),
    number("optimizer.momentum", 0, 1, high_open=True),
    # -- models (a key the chosen model does not have is skipped)
    whole("model.conv_blocks", 1),
    whole("model.filters", 1),
    number("model.filter_growth", 0, low_open=True),
    whole("model.kernel_size", 1),
    whole("model.branches", 1),
    whole("model.dense_layers", 0),
    whole("model.dense_units", 0),
    number("model.dropout", 0, 1, "1 would drop everything", high_open=True),
    number("model.alpha", 0, low_open=True),
    whole("model.fine_tune.head_epochs", 0, why="phase 1's epochs, backbone frozen"),
    whole(
        "model.fine_tune.unfreeze_layers",
        0,
        why="the backbone's top layers with weights that phase 2 trains",
    ),
    number(
        "model.fine_tune.unfreeze_fraction",
        0,
        1,
        "the share of the backbone's layers with weights, counted from the top, that phase 2 "
        "trains",
        null="to count model.fine_tune.unfreeze_layers instead",
    ),
    number("model.fine_tune.lr_multiplier", 0, low_open=True),
    boolean(
        "model.feature_cache.enabled",
        "train on cached activations of the frozen backbone, or not",
    ),
    number(
        "model.feature_cache.max_gb",
        0,
        low_open=True,
        why="the size limit of the cache folder in gigabytes; least recently used entries are "
        "deleted beyond it",
    ),
    whole(
        "model.feature_cache.augmented_copies",
        0,
        why="how many augmented copies of the training images phase 1 cycles over; 0: trials "
        "with augmentation run uncached",
    ),
    # -- data
    choice(
        "data.augmentation.preset",
        tuple(PRESETS),
        "a named set of flip and strengths",
        null="for the flip and strength keys as set",
    ),
    choice("data.augmentation.flip", FLIPS, null="(none)"),
    choice(
        "data.augmentation.fill_mode",
        FILL_MODES,
        "how rotation, translation and zoom fill the edges",
        null="(reflect)",
    ),
    *(number(f"data.augmentation.{name}", 0, top, "0 is off") for name, top in STRENGTHS.items()),
    # -- tracking
    Rule(
        "tracking.log_models",
        lambda v: v in ("best", "all") or isinstance(v, bool),
        "best (the models of trials that improved on the best so far), all (every trial's), "
        "or false (none; the final stage re-trains the best trial)",
    ),
    # -- the final stage
    whole("final.max_misclassified", 0, when=FINAL),
    whole(
        "final.top_k",
        0,
        why="how many of the best trials are re-trained before the test; 0: test the best trial "
        "as it is",
        when=FINAL,
    ),
    whole("final.seeds", 0, why="how many new seeds each is re-trained with", when=FINAL),
    number(
        "final.contender_se",
        0,
        why="re-evaluate only the top trials whose validation accuracy lies within that many "
        "standard errors of the best's",
        null="to re-evaluate the top final.top_k as they are",
        when=FINAL,
    ),
    whole(
        "final.ensemble",
        1,
        why="how many of the models the sweep trained for its best configs the shipped model "
        "averages; 1: the single best model",
        when=FINAL,
    ),
    boolean(
        "final.distil",
        "true: with an ensemble, also train one student against its probabilities and ship by "
        "final.ship",
        when=FINAL,
    ),
    number(
        "final.distil_temperature",
        0,
        low_open=True,
        why="the softening of the ensemble's probabilities the student learns (docs/distil.md)",
        when=FINAL,
    ),
    number(
        "final.distil_alpha",
        0,
        1,
        why="the weight of the true labels in the student's loss, the rest the ensemble's",
        when=FINAL,
    ),
    choice(
        "final.ship",
        ("fastest", "accurate"),
        "between the ensemble and its student: fastest within final.ship_within, or accurate",
        when=FINAL,
    ),
    number(
        "final.ship_within",
        0,
        1,
        why="the test accuracy the student may lose against the ensemble and still ship "
        "(final.ship=fastest)",
        when=FINAL,
    ),
    choice(
        "final.export_target",
        EXPORT_FORMATS,
        "the export whose file the trials' model_bytes and latency_ms are measured from, when "
        "they decide; it must also be in final.export",
        null="for the Keras model in memory",
    ),
    choice(
        "final.champion_metric",
        CHAMPION_METRICS,
        "a test metric the final stage reports",
        when=FINAL,
    ),
)
BY_KEY: dict[str, Rule] = {rule.key: rule for rule in RULES}


def check_values(cfg: DictConfig, space: list[Param]) -> None:
    """Raise `UserInputError` for the first fixed or sampleable value no trial could use."""
    for rule in RULES:
        value = OmegaConf.select(cfg, rule.key, default=_ABSENT)
        if value is _ABSENT or not _applies(cfg, rule):
            continue  # a key the composed config does not have (another model's option)
        if value is None and rule.null is not None:
            continue
        if not rule.accepts(value):
            raise UserInputError(rule.refusal(value))
    for param in space:
        _check_param(cfg, param)


def _applies(cfg: DictConfig, rule: Rule) -> bool:
    if rule.when is None:
        return True
    key, value = rule.when
    return OmegaConf.select(cfg, key, default=None) == value


def _check_param(cfg: DictConfig, param: Param) -> None:
    """Every value `param` can produce must fit its key's rule, or at least the base's type."""
    where = f"space entry {param.name!r}"
    rule = BY_KEY.get(param.name)
    if param.kind == "categorical":
        values = [v for v in param.choices if not (v is None and rule and rule.null is not None)]
    else:
        if rule is not None and rule.whole and param.kind == "float":
            raise UserInputError(
                f"{where} samples floats (type: float) but {param.name} must be {rule.says}; "
                "use type: int."
            )
        values = [param.low, param.high]
    for value in values:
        if rule is not None and not rule.accepts(value):
            shown = "choice" if param.kind == "categorical" else "bound"
            raise UserInputError(
                f"{where} can sample {rule.refusal(value, f'(a {shown} of the space), which')}"
            )
        if rule is None:
            _check_type(where, param.name, OmegaConf.select(cfg, param.name), value)


def _check_type(where: str, key: str, base: Any, value: Any) -> None:
    """Without a rule, a sampled value must at least have the configured value's type."""
    if (
        base is None
        or value is None
        or isinstance(base, list | tuple | dict)
        or OmegaConf.is_config(base)
    ):
        return  # null (a documented default for several keys) or a structure: not decidable here
    if isinstance(base, bool):
        fits = isinstance(value, bool)
    elif _is_int(base):
        fits = _is_int(value) or (isinstance(value, float) and value.is_integer())
    elif isinstance(base, float):
        fits = _is_number(value)
    else:
        fits = isinstance(value, str) or value is None
    if not fits:
        raise UserInputError(
            f"{where} can sample {key}={value!r} ({type(value).__name__}), but {key} is "
            f"{base!r} ({type(base).__name__}) in the config; give choices of that type."
        )


class _Absent:
    pass


_ABSENT = _Absent()
