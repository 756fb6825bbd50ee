"""Configuration: the models of the config file, and loading it.

`load_config(path)` returns a validated, immutable `Config` or raises
`ConfigError` with every problem in the file.
"""

from router.config.checks import check_limits
from router.config.errors import ConfigError
from router.config.loading import load_config, parse_config
from router.config.models import *  # noqa: F403
from router.config.models import __all__ as _model_names

__all__ = [*_model_names, "ConfigError", "check_limits", "load_config", "parse_config"]
