"""gaternet_zoo: GaterNets (input-dependent filter gating, Chen et al. CVPR 2019) over timm backbones.

The public API is re-exported here explicitly; everything else lives in private ``_``-modules. Importing the
package registers the zoo's models in timm's registry (``timm.create_model("gaternet_resnet20")``), which imports
torch and timm: seconds on a busy machine. The one exception is the ``gaternet-zoo`` console script asked only for
its help or version (see :func:`~gaternet_zoo._cli_fast.asks_only_for_help`), which needs none of it.
"""
import sys as _sys

from ._cli_fast import asks_only_for_help as _asks_only_for_help
from .version import __version__ as __version__

__all__ = [
    'BlockGatingPlugin', 'CifarResNet', 'ChecksumError', 'GatePoint', 'GateSite', 'GateStatistics', 'GaterNet',
    'GatingPlugin', 'HubLoadError', 'InputDependentGatesError', 'MacBudgetLoss', 'StateDictMismatchError',
    'StaticBackbone', 'UnknownModelError', 'UnsupportedBackboneError', 'UnsupportedPlacementError', '__version__',
    'create_model', 'export_static', 'gate', 'gate_l1_loss', 'gate_target_rate_loss', 'get_plugin',
    'get_pretrained_cfg', 'is_model', 'list_backbones', 'list_models', 'list_plugins', 'list_pretrained',
    'load_official_checkpoint', 'parse_model_name', 'plugins_supporting', 'prune_gaternet', 'PruningError',
    'register_gating_plugin', 'register_weights',
]

if not _asks_only_for_help(_sys.argv):
    from . import plugins as _plugins_registration  # noqa: F401  (registers the built-in gating plugins)
    from ._convert import load_official_checkpoint as load_official_checkpoint
    from ._factory import create_model as create_model
    from ._factory import gate as gate
    from ._factory import parse_model_name as parse_model_name
    from ._plugins import BlockGatingPlugin as BlockGatingPlugin
    from ._plugins import GatePoint as GatePoint
    from ._plugins import GateSite as GateSite
    from ._plugins import GatingPlugin as GatingPlugin
    from ._plugins import UnsupportedBackboneError as UnsupportedBackboneError
    from ._plugins import UnsupportedPlacementError as UnsupportedPlacementError
    from ._plugins import get_plugin as get_plugin
    from ._plugins import list_plugins as list_plugins
    from ._plugins import plugins_supporting as plugins_supporting
    from ._plugins import register_gating_plugin as register_gating_plugin
    from ._pretrained import register_weights as register_weights
    from ._prune import PruningError as PruningError
    from ._prune import prune_gaternet as prune_gaternet
    from ._registry import UnknownModelError as UnknownModelError
    from ._registry import get_pretrained_cfg as get_pretrained_cfg
    from ._registry import is_model as is_model
    from ._registry import list_backbones as list_backbones
    from ._registry import list_models as list_models
    from ._registry import list_pretrained as list_pretrained
    from ._static import InputDependentGatesError as InputDependentGatesError
    from ._static import export_static as export_static
    from .hub import ChecksumError as ChecksumError
    from .hub import HubLoadError as HubLoadError
    from .hub import StateDictMismatchError as StateDictMismatchError
    from .losses import MacBudgetLoss as MacBudgetLoss
    from .losses import gate_l1_loss as gate_l1_loss
    from .losses import gate_target_rate_loss as gate_target_rate_loss
    from .models import CifarResNet as CifarResNet
    from .models import GaterNet as GaterNet
    from .models import StaticBackbone as StaticBackbone
    from .utils import GateStatistics as GateStatistics
