"""Model families; importing this package registers every model into timm's registry."""
from .._registry import GATERNET_MODULES, ZOO_MODULES
from .cifar_resnet import *  # noqa: F403
from .cifar_resnet import CifarResNet
from .gaternet import *  # noqa: F403
from .gaternet import GaterNet
from .gaternet_timm import *  # noqa: F403
from .static_backbone import StaticBackbone
