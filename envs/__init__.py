"""The `tsr` environments: text games behind one gymnasium-based contract.

`make(name, **kwargs)` builds a registered environment and `register(name,
factory)` adds one. Importing this package registers the built-in
environments.
"""

from envs.base import GRID_CHARSET, TextEnv, make, register, registered

# imported for their side effect: each module registers its environment
from envs import frozenlake, sokoban, webshop  # noqa: E402,F401  isort: skip

__all__ = ["GRID_CHARSET", "TextEnv", "make", "register", "registered"]
