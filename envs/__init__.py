"""The `tsr` environments: text games behind one gymnasium-based contract.

`make(name, **kwargs)` builds a registered environment, `factory(name,
**kwargs)` a checked maker of it, and `register(name, factory)` adds one. Importing this package registers the built-in
environments.
"""

from envs.base import GRID_CHARSET, TextEnv, factory, make, register, registered

# imported for their side effect: each module registers its environment
from envs import frozenlake, sokoban, webshop  # noqa: E402,F401  isort: skip

__all__ = ["GRID_CHARSET", "TextEnv", "factory", "make", "register", "registered"]
