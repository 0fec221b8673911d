"""Training: configuration, random streams, the trainer, checkpoints and data parallelism."""

from flexmdm.training.config import Config, ConfigError, TrainConfig, config_from_dict, load_config
from flexmdm.training.streams import keyed_generator
from flexmdm.training.trainer import EMA, TrainResult, learning_rate_factor, read_metrics, train

__all__ = [
    "Config",
    "ConfigError",
    "EMA",
    "TrainConfig",
    "TrainResult",
    "config_from_dict",
    "keyed_generator",
    "learning_rate_factor",
    "load_config",
    "read_metrics",
    "train",
]
