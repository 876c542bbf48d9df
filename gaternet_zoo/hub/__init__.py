"""The Hugging Face Hub format: ``model.safetensors`` + timm-schema ``config.json`` + model card, as files.

This layer fetches, verifies, reads and writes those files; it builds no model and knows nothing of the zoo's
architectures (``tests/test_imports.py`` holds it to that). Models are built from what it returns by the models
layer: :func:`gaternet_zoo._builder.build_from_config` for ``hf-hub:`` / ``local-dir:`` names and
``from_pretrained``, :func:`gaternet_zoo._builder.build_with_cfg` for registry names.

- :mod:`~gaternet_zoo.hub._files`: downloads (``hf_hub_download``), the local Hub cache, sha256, the copies shipped
  with the package, an unreachable Hub.
- :mod:`~gaternet_zoo.hub._state_dict`: strict, verified loading of weights into a built model.
- :mod:`~gaternet_zoo.hub._config`: ``config.json`` read, written from a model, fingerprinted and verified.
- :mod:`~gaternet_zoo.hub._save`: byte-reproducible saving of a model folder.
"""
from ._config import (
    canonical_json,
    config_fingerprint,
    fingerprint_values,
    model_config,
    read_config,
    split_config,
    verify_config,
)
from ._constants import (
    CARD_NAME,
    CONFIG_FINGERPRINT_KEY,
    CONFIG_NAME,
    CONFIG_VALUES_KEY,
    HUB_PROBE_TIMEOUT,
    MODEL_SOURCES,
    SHIP_LIMIT_BYTES,
    WEIGHTS_NAME,
)
from ._errors import ChecksumError, HubLoadError, NonFiniteWeightsError, StateDictMismatchError
from ._files import (
    SourceFiles,
    check_sha256,
    download,
    find_shipped_weights,
    hub_unreachable,
    resolve_hub_weights,
    sha256_file,
    shipped_weights_dirs,
    source_files,
    timm_pretrained_args,
)
from ._save import canonical_safetensors_header, save_pretrained
from ._state_dict import (
    check_finite_weights,
    classifier_keys,
    clean_state_dict_keys,
    load_pretrained,
    load_weights,
    state_dict_mismatches,
)

__all__ = [
    'CARD_NAME', 'CONFIG_FINGERPRINT_KEY', 'CONFIG_NAME', 'CONFIG_VALUES_KEY', 'HUB_PROBE_TIMEOUT', 'MODEL_SOURCES',
    'SHIP_LIMIT_BYTES', 'WEIGHTS_NAME', 'ChecksumError', 'HubLoadError', 'NonFiniteWeightsError',
    'StateDictMismatchError', 'SourceFiles', 'canonical_json', 'canonical_safetensors_header', 'check_finite_weights',
    'check_sha256', 'classifier_keys', 'clean_state_dict_keys', 'config_fingerprint', 'download',
    'find_shipped_weights', 'fingerprint_values', 'hub_unreachable', 'load_pretrained', 'load_weights',
    'model_config', 'read_config', 'resolve_hub_weights', 'save_pretrained', 'sha256_file', 'shipped_weights_dirs',
    'source_files', 'split_config', 'state_dict_mismatches', 'timm_pretrained_args', 'verify_config',
]
