"""The search space of `catdog tune`: params.yaml's `tune.space.<model>`, checked against the model's entry, sampled
by an Optuna trial, and written as the `dvc exp run -S` overrides of that trial.

A key names a param of the model's entry (`lr`) or one element of a list in it (`hidden.0`, the first hidden
layer's width). Its value is a range `{low, high, log}` (integers when both bounds are, `step` allowed) or
`{choices: [...]}`, whose choices may be any YAML value (`null`, a dict).
"""

import json
from dataclasses import dataclass

from catdog import CatdogError

RANGE_KEYS = {"low", "high", "log", "step"}


@dataclass(frozen=True)
class Knob:
    key: str            # in the model's entry: "lr", "hidden.0"
    spec: dict          # {low, high, log, step} or {choices}

    def distribution(self):
        """The Optuna distribution. Optuna's choices may only be None, bool, numbers or str: others (a dict) make
        the choices JSON text."""
        import optuna.distributions as d

        if "choices" in self.spec:
            return d.CategoricalDistribution([json.dumps(c) for c in self.spec["choices"]] if self._as_json()
                                             else self.spec["choices"])
        low, high, log, step = self.spec["low"], self.spec["high"], self.spec.get("log", False), self.spec.get("step")
        if isinstance(low, int) and isinstance(high, int) and (step is None or isinstance(step, int)):
            return d.IntDistribution(low, high, log=log, step=step or 1)
        return d.FloatDistribution(float(low), float(high), log=log, step=step)

    def _as_json(self) -> bool:
        return not all(c is None or isinstance(c, (bool, int, float, str)) for c in self.spec["choices"])

    def value(self, sampled):
        return json.loads(sampled) if "choices" in self.spec and self._as_json() else sampled


def knobs(params: dict, model: str) -> list[Knob]:
    """The model's search space, checked: every key a param of its entry, every range non-empty. One line naming
    the param and the fix otherwise."""
    models = params.get("models") or {}
    if model not in models:
        raise CatdogError(f"--model {model!r} is not an entry of `models` in params.yaml; valid: "
                          f"{', '.join(sorted(models))}")
    space = ((params.get("tune") or {}).get("space") or {}).get(model)
    if not isinstance(space, dict) or not space:
        raise CatdogError(f"params.yaml has no search space for {model}: add tune.space.{model} with ranges, e.g. "
                          f"lr: {{low: 0.0001, high: 0.01, log: true}}")
    return [_checked(model, models[model], key, spec) for key, spec in space.items()]


def _checked(model: str, cfg: dict, key: str, spec) -> Knob:
    where = f"tune.space.{model}.{key}"
    current = _lookup(cfg, key)
    if current is _MISSING:
        raise CatdogError(f"{where}: models.{model} has no param {key!r} (its params: {', '.join(cfg)}); name one "
                          "of them, or hidden.0 for the first element of a list")
    if not isinstance(spec, dict):
        raise CatdogError(f"{where}={spec!r} must be a range {{low, high, log}} or {{choices: [...]}}")
    if "choices" in spec:
        if set(spec) != {"choices"} or not isinstance(spec["choices"], list) or not spec["choices"]:
            raise CatdogError(f"{where}: choices must be a non-empty list, alone, e.g. {{choices: [16, 32, 64]}}")
        return Knob(key, spec)
    unknown = set(spec) - RANGE_KEYS
    low, high = spec.get("low"), spec.get("high")
    if unknown or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise CatdogError(f"{where}={spec!r} must be a range with numbers low and high (and optional log, step), or "
                          "{choices: [...]}")
    if not low < high:
        raise CatdogError(f"{where}: the range {low} .. {high} is empty or inverted: low must be below high")
    if spec.get("log") and low <= 0:
        raise CatdogError(f"{where}: a log-scale range needs low > 0, not {low}")
    if spec.get("log") and spec.get("step"):
        raise CatdogError(f"{where}: log and step cannot go together (Optuna's rule): drop one")
    if isinstance(current, int) and not isinstance(current, bool) and not (isinstance(low, int)
                                                                            and isinstance(high, int)):
        raise CatdogError(f"{where}: models.{model}.{key} is an integer ({current}): give integer bounds")
    return Knob(key, spec)


_MISSING = object()


def _lookup(cfg: dict, key: str):
    node = cfg
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def distributions(space: list[Knob]) -> dict:
    """What `study.ask` samples: {key: Optuna distribution}."""
    return {k.key: k.distribution() for k in space}


def values(space: list[Knob], sampled: dict) -> dict:
    """A trial's values ({key: value}) from its Optuna params."""
    return {k.key: k.value(sampled[k.key]) for k in space}


def apply(cfg: dict, values: dict) -> dict:
    """The model's entry with the sampled values in it (a copy); a list element changes its list."""
    cfg = json.loads(json.dumps(cfg))
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = cfg
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(leaf)] = value
        else:
            node[leaf] = value
    return cfg


def overrides(model: str, cfg: dict, values: dict) -> list[str]:
    """`dvc exp run -S` arguments setting the trial's values: one per top-level param of the entry it changes (a
    whole list for hidden.0), in DVC's (Hydra's) override grammar."""
    changed = apply(cfg, values)
    tops = sorted({key.split(".")[0] for key in values})
    return [f"models.{model}.{top}={hydra(changed[top])}" for top in tops]


def hydra(value) -> str:
    """A value in Hydra's override grammar, as `dvc exp run -S` reads it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, float):
        mantissa, e, exponent = repr(value).partition("e")  # Hydra reads 1e-12 as a string, 1.0e-12 as a float
        return f"{mantissa if '.' in mantissa else mantissa + '.0'}{e}{exponent}"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list):
        return "[" + ", ".join(hydra(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {hydra(v)}" for k, v in value.items()) + "}"
    raise CatdogError(f"cannot write {value!r} as a `dvc exp run -S` value")
