"""The settings every member reads -- the learning-rate cycle, the weight decay, the dropout rate --
as registry rows, and the optimiser a member builds from its values.

Importing this module registers five `registry.Setting` rows with a `config_key`:

  lr_min, lr_max       the triangular cycle's ends       config.optim.lr_min, .lr_max
  half_cycle_epochs    epochs from lr_min to lr_max      config.optim.half_cycle_epochs
  weight_decay         AdamW's decoupled decay, SGD's L2 config.optim.weight_decay
  dropout              the MLP's dropout rate            config.model.dropout

Each is a traced value of every member, as alpha is of a mixing member:
`--config.sweep.weight_decay=(1e-5,1e-4,1e-3)` crosses three values with every method's own grids
and trains them all in each kind's one compiled program. A member whose grid config.sweep does
not set takes the config's value, so a config that sets none trains as before. What changes
shapes (hidden sizes, the batch size) stays a field of the compiled program.

The optimiser is built inside the member's own function from its traced values
(`make_optimizer`), so its state holds no hyperparameter (as `optax.inject_hyperparams`' would):
a checkpoint's layout does not depend on which settings are swept.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp
import optax

# The methods' settings first, so every process lists the settings in one order.
import embaug_jax.augment  # noqa: F401
from embaug_jax import registry
from embaug_jax.registry import Range, Setting
from embaug_jax.util import is_traced

OPTIMIZERS = ("adamw", "sgd")

_POSITIVE = Range(low=0, low_closed=False)
registry.register(Setting(name="lr_min", grid="lr_min", range=_POSITIVE, default=(),
                          config_key="optim.lr_min", note="the learning-rate cycle's low end"))
registry.register(Setting(name="lr_max", grid="lr_max", range=_POSITIVE, default=(),
                          config_key="optim.lr_max", note="the learning-rate cycle's high end"))
registry.register(Setting(name="half_cycle_epochs", grid="half_cycle_epochs", range=Range(low=1),
                          default=(), config_key="optim.half_cycle_epochs",
                          note="whole epochs from lr_min to lr_max"))
registry.register(Setting(name="weight_decay", grid="weight_decay", range=Range(low=0),
                          default=(), config_key="optim.weight_decay",
                          note="AdamW's decoupled decay, SGD's L2"))
registry.register(Setting(name="dropout", grid="dropout", range=Range(low=0, high=1,
                                                                      high_closed=False),
                          default=(), config_key="model.dropout",
                          note="the rate after each hidden layer"))


def config_value(config, setting: Setting) -> float:
    """The value `config` gives a setting every method reads (at its `config_key`)."""
    value = config
    for part in setting.config_key.split("."):
        value = value[part]
    return float(value)


def sweep_grid(config, setting: Setting) -> tuple[float, ...]:
    """The values a sweep runs of `setting`: config.sweep's grid, or for a setting every method
    reads whose grid is unset (None or empty), the config's one value."""
    grid = config.sweep.get(setting.grid)
    if setting.every_method and not grid:
        return (config_value(config, setting),)
    return tuple(float(v) for v in (grid or ()))


def triangular_schedule(low, high, half_cycle_steps) -> optax.Schedule:
    """Triangular cyclic learning rate: low -> high over `half_cycle_steps`, back, and repeat.

    Each argument may be a traced scalar (a sweep member's)."""
    if not is_traced(half_cycle_steps) and half_cycle_steps < 1:
        raise ValueError(f"half_cycle_steps={half_cycle_steps} must be >= 1.")

    def schedule(step):
        phase = jnp.mod(step, 2 * half_cycle_steps) / half_cycle_steps  # in [0, 2)
        return low + (high - low) * (1.0 - jnp.abs(phase - 1.0))

    return schedule


def make_optimizer(optimizer: str, settings: Mapping[str, Any], steps_per_epoch: int, *,
                   momentum: float = 0.9) -> optax.GradientTransformation:
    """AdamW (decoupled weight decay) or SGD with momentum and L2, on the triangular cycle.

    Args:
      optimizer: one of `OPTIMIZERS` (a code path: a field of the compiled program).
      settings: lr_min, lr_max, half_cycle_epochs and weight_decay, numbers or one member's
        traced scalars (`train.members.MemberHParams.optim`).
      steps_per_epoch: updates per epoch.
      momentum: SGD's.
    """
    lr = triangular_schedule(settings["lr_min"], settings["lr_max"],
                             settings["half_cycle_epochs"] * steps_per_epoch)
    if optimizer == "adamw":
        return optax.adamw(lr, weight_decay=settings["weight_decay"])
    if optimizer == "sgd":
        return optax.chain(optax.add_decayed_weights(settings["weight_decay"]),
                           optax.sgd(lr, momentum=momentum))
    raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}.")


def learning_rates(settings: Mapping[str, float], epochs, steps_per_epoch: int) -> jnp.ndarray:
    """The learning rate of a member with `settings` after each of `epochs`: the rate of the
    next epoch's first update."""
    schedule = triangular_schedule(settings["lr_min"], settings["lr_max"],
                                   settings["half_cycle_epochs"] * steps_per_epoch)
    return schedule(jnp.asarray(epochs) * steps_per_epoch)
