"""Apply sampled params: a trial config is the base config with dotted keys overridden.

A trial is nothing but its overrides, so it can be logged, re-run and diffed (`search.rerun`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from search.space.spec import Param


def active_values(params: list[Param], cfg: DictConfig) -> dict[str, Any]:
    """The sampled values a trial config holds: each active parameter's value, by name, in
    sampling order (parents first), as the engines sampled them. Inactive entries (their `when`
    not met) are left out, as `suggest` leaves them out."""
    values: dict[str, Any] = {}
    for p in params:
        if p.is_active(values):
            values[p.name] = OmegaConf.select(cfg, p.name)
    return values


def apply_params(base: DictConfig, params: Mapping[str, Any]) -> DictConfig:
    """The trial config: a copy of `base` with each dotted key set to its sampled value."""
    return OmegaConf.create(trial_values(OmegaConf.to_container(base, resolve=True), params))


def trial_values(resolved: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """`apply_params` on plain containers: a copy of `resolved` (a resolved config as dicts and
    lists) with each dotted key set, as `OmegaConf.update(..., merge=False)` sets it (missing
    mappings on the way are created). The sweep process builds each trial's config this way:
    OmegaConf's nodes cost 20-100 ms of its CPU a trial, and a worker only needs the text."""
    import copy

    values = copy.deepcopy(resolved)
    for key, value in params.items():
        node, parts = values, key.split(".")
        for part in parts[:-1]:
            if isinstance(node, list) and part.isdigit():
                node = node[int(part)]
            else:
                node = node.setdefault(part, {})
        if isinstance(node, list):
            node[int(parts[-1])] = copy.deepcopy(value)
        else:
            node[parts[-1]] = copy.deepcopy(value)
    return values


def config_yaml(cfg: DictConfig | dict[str, Any]) -> str:
    """`OmegaConf.to_yaml(cfg)`, the same text, with libyaml's C emitter where PyYAML has it.

    The sweep writes one a trial (to its worker, to its MLflow run), and OmegaConf's pure-Python
    emitter takes 13-50 ms a config of the sweep process's CPU, which the workers' training
    needs; this takes about 1 ms. Strings that read as numbers or booleans stay quoted, as
    OmegaConf quotes them.
    """
    import yaml
    from omegaconf._utils import OmegaConfDumper

    if not getattr(yaml, "__with_libyaml__", False):
        return OmegaConf.to_yaml(cfg)
    values = OmegaConf.to_container(cfg) if isinstance(cfg, DictConfig) else cfg

    class Dumper(yaml.CDumper):
        pass

    # OmegaConf's representer is typed for yaml.Dumper; it only calls represent_scalar (CDumper's too).
    Dumper.add_representer(str, OmegaConfDumper.str_representer)  # type: ignore[arg-type]
    return yaml.dump(
        values, Dumper=Dumper, default_flow_style=False, allow_unicode=True,
        sort_keys=False,
    )  # fmt: skip
