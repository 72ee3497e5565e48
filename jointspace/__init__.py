"""jointspace: learn, evaluate and serve joint multimodal embedding spaces."""
from .config import ModelConfig, RunConfig, TrainConfig
from .model import JointModel, load
from .model_import import import_model

from .version import __version__
__all__ = ["JointModel", "ModelConfig", "RunConfig", "TrainConfig", "import_model", "load",
           "__version__"]
