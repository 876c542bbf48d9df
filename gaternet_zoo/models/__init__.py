"""Model families; importing this package registers every model into timm's registry."""
from .cifar_resnet import *  # noqa: F403
from .cifar_resnet import CifarResNet
from .gaternet import *  # noqa: F403
from .gaternet import GaterNet
from .gaternet_timm import *  # noqa: F403

#: timm registry modules that hold the zoo's models (timm keys its registry by the last module name).
ZOO_MODULES = ('cifar_resnet', 'gaternet', 'gaternet_timm')
GATERNET_MODULES = ('gaternet', 'gaternet_timm')
