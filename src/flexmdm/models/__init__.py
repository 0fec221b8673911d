"""Networks: the DiT with FlexMDM and MDM heads, a causal reference LM, and their checkpoints."""

from flexmdm.models.autoregressive import AutoregressiveLM
from flexmdm.models.config import MODEL_KINDS, ModelConfig
from flexmdm.models.dit import FlexMDMModel, MDMModel
from flexmdm.models.pretrained import build_model, load_pretrained, save_pretrained

__all__ = [
    "AutoregressiveLM",
    "FlexMDMModel",
    "MDMModel",
    "MODEL_KINDS",
    "ModelConfig",
    "build_model",
    "load_pretrained",
    "save_pretrained",
]
