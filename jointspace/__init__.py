"""jointspace: learn, evaluate and serve joint multimodal embedding spaces."""
from .config import ModelConfig, RunConfig, TrainConfig
from .model import JointModel, load

__version__ = "0.1.0"
__all__ = ["JointModel", "ModelConfig", "RunConfig", "TrainConfig", "load", "__version__"]
