"""File names, metadata keys and limits of the zoo's Hub format.

This module imports nothing, on purpose: ``setup.py`` loads it from its path to read :data:`SHIP_LIMIT_BYTES`
at build time, where neither torch nor gaternet_zoo's dependencies may be installed.
"""

WEIGHTS_NAME = 'model.safetensors'
CONFIG_NAME = 'config.json'
CARD_NAME = 'README.md'

#: Published weights up to this size travel inside the wheel (``setup.py`` applies it); larger ones stay on the Hub
#: and in a source checkout's ``weights/`` folder.
SHIP_LIMIT_BYTES = 16_777_216  # 16 MiB

#: Seconds the reachability probe waits for the Hub before loading goes on with the cache and the shipped copy.
HUB_PROBE_TIMEOUT = 3.0

#: ``model.safetensors`` metadata key holding the :func:`~gaternet_zoo.hub.config_fingerprint` of the config saved
#: with the weights.
CONFIG_FINGERPRINT_KEY = 'gaternet_zoo.config_sha256'
#: ``model.safetensors`` metadata key holding the fingerprinted values themselves (canonical JSON), so that a
#: config edited after saving is refused naming the key that changed.
CONFIG_VALUES_KEY = 'gaternet_zoo.config'

#: The prefixes of model names that load from a source rather than the registry (``hf-hub:``, ``local-dir:``).
MODEL_SOURCES = ('hf-hub', 'local-dir')
