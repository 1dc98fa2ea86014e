"""tsr: Trajectory-Search Rollouts for multi-turn RL of LLM agents."""

__version__ = "0.1.0"
