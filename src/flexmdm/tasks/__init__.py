"""Tasks: each module holds one task's data, layouts and metric, registered for training."""
