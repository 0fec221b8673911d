"""Training: configuration, data tasks, the trainer, checkpoints and data parallelism."""

from flexmdm.training.config import Config, ConfigError, TrainConfig, config_from_dict, load_config
from flexmdm.training.data import Task, TrainingBatch, get_task_class, keyed_generator, register_task
from flexmdm.training.trainer import EMA, TrainResult, learning_rate_factor, train

__all__ = [
    "Config",
    "ConfigError",
    "EMA",
    "Task",
    "TrainConfig",
    "TrainResult",
    "TrainingBatch",
    "config_from_dict",
    "get_task_class",
    "keyed_generator",
    "learning_rate_factor",
    "load_config",
    "register_task",
    "train",
]
