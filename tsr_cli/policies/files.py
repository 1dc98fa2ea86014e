"""Checks that model files load before anything is built from them.

A run dies at the wrong moment, a copy is cut short, a disk fills: then a
file is truncated or missing. Each check here names the bad file in a
ValueError, so the user reads which file to fix instead of a parser's
traceback. Tsr checkpoints (`tsr_cli.train.checkpoint`) and Hugging Face
model directories are both checked with these.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path

from tsr_cli.errors import first_line

#: any one of these makes a directory's tokenizer loadable by transformers
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model")


class BadFileError(ValueError):
    """A model file that is missing, truncated or not what its name says."""


def check_safetensors(path: Path) -> None:
    """Parse the header and check that the data covers it (what a truncation breaks)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise BadFileError(f"{path} is missing")
    try:
        with safe_open(str(path), framework="pt"):
            pass
    except Exception as exc:  # safetensors raises its own SafetensorError (and OSError)
        raise BadFileError(f"{path} is truncated or corrupt ({first_line(exc)})") from None


def read_json(path: Path) -> object:
    """The parsed JSON file, or BadFileError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BadFileError(f"{path} is missing") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadFileError(f"{path} is truncated or not JSON ({first_line(exc)})") from None


def check_model_dir(path: Path) -> None:
    """A Hugging Face model directory: config.json, a tokenizer and readable weight files."""
    path = Path(path)
    config = read_json(path / "config.json")
    if not isinstance(config, dict) or "model_type" not in config:
        raise BadFileError(f"{path / 'config.json'} is not a transformers model config (no model_type)")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise BadFileError(f"{path} has no tokenizer: none of {', '.join(TOKENIZER_FILES)} is there")
    for weights in sorted(path.glob("*.safetensors")):
        check_safetensors(weights)


@contextmanager
def held_transformers_warnings():
    """Hold transformers' log records while a model loads; show them only if it loads.

    A load that fails prints a long report before its exception; the CLI
    says the same in one line, so the report is dropped then.
    """
    from transformers.utils import logging as hf_logging

    logger = hf_logging.get_logger("transformers")  # also installs transformers' own handler first
    held: list[logging.LogRecord] = []
    handlers, logger.handlers = logger.handlers, []
    keep = logging.Handler()
    keep.emit = held.append
    logger.addHandler(keep)
    try:
        yield
    finally:
        logger.handlers = handlers
    for record in held:  # reached only when the load succeeded
        logger.handle(record)
