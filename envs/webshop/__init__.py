"""WebShop (Yao et al. 2022): a text web shop where the agent searches, picks options and buys.

- `WebShopEnv` / `envs.make("webshop", ...)`: the environment (env.py, pages.py);
- `get_reward`: WebShop's purchase reward on its own record formats (reward.py);
- `load_catalogue`: the generated default catalogue or WebShop's real files
  (catalogue.py, generated.py, data.py, goals.py), shared by every env;
- `search_engine`: BM25 over a catalogue, shared likewise (search_engine.py);
- `expert_action` / `run_expert`: a scripted shopper (expert.py).
"""

from envs.base import register
from envs.webshop.catalogue import Catalogue, load_catalogue
from envs.webshop.env import WebShopEnv
from envs.webshop.expert import expert_action, run_expert
from envs.webshop.reward import get_reward, reward_info
from envs.webshop.search_engine import search_engine

register("webshop", WebShopEnv)

__all__ = [
    "Catalogue", "WebShopEnv", "expert_action", "get_reward", "load_catalogue", "reward_info",
    "run_expert", "search_engine",
]
