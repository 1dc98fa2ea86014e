"""The `tsr` command line: a thin Typer layer over the library.

`main(argv) -> int` runs the app without click's standalone handling, so that
every user mistake becomes one line on stderr and exit code 2, never a
traceback. A full disk is one line and exit code 1; Ctrl-C during training
is one line and exit code 130 (see `tsr_cli/interrupts.py`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import click
import typer
from rich.console import Console
from rich.table import Table

from tsr_cli.errors import Interrupted, RunFault, UserError
from tsr_cli.evaluate import EVAL_SEED_OFFSET
from tsr_cli.interrupts import cancel_on_ctrl_c, stop_on_ctrl_c

app = typer.Typer(
    name="tsr",
    help="Trajectory-Search Rollouts: train and evaluate multi-turn LLM agents with search.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()



@app.command("envs")
def envs_cmd() -> None:
    """List the registered environments."""
    import envs

    table = Table("name", "actions", "turns x actions/turn", title="environments")
    for name in envs.registered():
        env = envs.make(name)
        words = ", ".join(env.action_names)
        table.add_row(name, words[:60], f"{env.max_turns} x {env.max_actions_per_turn}")
    out.print(table)


@app.command("play")
def play_cmd(
    env: str = typer.Argument(..., help="environment name (see `tsr envs`)"),
    seed: int = typer.Option(0, help="instance seed"),
    env_arg: List[str] = typer.Option([], "--env-arg", help="environment argument key=value"),
) -> None:
    """Play an environment yourself in the terminal: type actions, `q` to quit."""
    from tsr_cli.play import play

    play(_make_env_factory(env, env_arg)(), seed, input_fn=input,
         print_fn=lambda text: out.print(text, markup=False, highlight=False))


@app.command("eval")
def eval_cmd(
    env: Optional[str] = typer.Option(None, help="environment name (see `tsr envs`); default sokoban, "
                                      "or the checkpoint's"),
    env_arg: List[str] = typer.Option([], "--env-arg", help="environment argument key=value, repeatable"),
    policy: str = typer.Option("random", help="random, expert, smollm2-135m, tiny, a HF id or path, or a "
                               "checkpoint dir (whose env and protocol settings become the defaults)"),
    search: str = typer.Option("none", help="none, best-of-n, beam or lookahead"),
    candidates: int = typer.Option(4, min=1, help="M candidates per turn (beam, lookahead); N samples (best-of-n)"),
    beam_width: int = typer.Option(1, min=1, help="B beams kept per turn (beam)"),
    depth: int = typer.Option(2, min=0, help="D look-ahead turns (lookahead)"),
    scorer: str = typer.Option("env_reward", help="env_reward, heuristic, or module:function"),
    episodes: int = typer.Option(20, min=1, help="number of held-out instances"),
    seed: int = typer.Option(0, help=f"instances are seeds {EVAL_SEED_OFFSET}+seed ...; also seeds sampling"),
    temperature: Optional[float] = typer.Option(
        None, min=0.0, help="sampling temperature; default 0 (greedy) for `none`, 1 with search"),
    max_new_tokens: Optional[int] = typer.Option(None, min=1, help="response length limit per turn (128)"),
    max_turns: Optional[int] = typer.Option(None, min=1, help="turns per episode (env default)"),
    actions_per_turn: Optional[int] = typer.Option(None, min=1, help="actions per turn (env default)"),
    answer_only: Optional[bool] = typer.Option(None, "--answer-only/--think",
                                               help="answer-only format, or <think> then answer (default)"),
    fresh_rng: bool = typer.Option(False, help="score stochastic outcomes with fresh RNGs"),
    batch: int = typer.Option(16, min=1, help="instances rolled out together per batch"),
    backend: str = typer.Option("hf", help="what generates: hf, or vllm (a vLLM engine; needs vLLM installed)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object as the last line"),
) -> None:
    """Evaluate a policy, with or without search, on held-out instances."""
    from tsr_cli.agent.protocol import ProtocolConfig
    from tsr_cli.evaluate import eval_seeds, evaluate
    from tsr_cli.policies.base import SamplingParams
    from tsr_cli.search import SearchConfig, resolve_scorer

    saved = _checkpoint_defaults(policy)
    env = env or saved.get("env", "sokoban")
    env_arg = env_arg or [f"{k}={json.dumps(v)}" for k, v in saved.get("env_args", {}).items()]
    max_turns = max_turns or saved.get("max_turns")
    actions_per_turn = actions_per_turn or saved.get("actions_per_turn")
    answer_only = saved.get("answer_only", False) if answer_only is None else answer_only
    max_new_tokens = max_new_tokens or saved.get("max_new_tokens", 128)
    make_env = _make_env_factory(env, env_arg)
    with UserError.wrap(ValueError):
        search_cfg = SearchConfig(search, candidates, beam_width, depth, fresh_rng=fresh_rng,
                                  scorer=scorer, seed=seed)
        resolve_scorer(scorer)
        protocol = ProtocolConfig(max_turns, actions_per_turn, answer_only=answer_only)
        temp = temperature if temperature is not None else (0.0 if search == "none" else 1.0)
        params = SamplingParams(temperature=temp, max_new_tokens=max_new_tokens, stop=protocol.stop)
    # the expert reads the game from the prompt, but the prompt shows neither the
    # environment's arguments (the slip model, the catalogue) nor the number of turns
    task = {"make_env": make_env, "max_turns": max_turns} if policy == "expert" else {}
    pol = _load_policy(policy, seed, env, backend, **task)
    with _progress(f"eval {env} · {search}", episodes) as advance:
        measured = evaluate(pol, make_env, eval_seeds(episodes, seed), search_cfg, params, protocol,
                            env_name=env, batch_groups=batch, on_batch=advance)
    summary = {"env": env, "policy": policy, "search": search, "scorer": scorer, **measured}
    if as_json:
        print(json.dumps(summary))
    else:
        _print_metrics(f"{summary['env']} · {summary['policy']} · {summary['search']}", summary)


@app.command("train")
def train_cmd(
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config (see experiments/)"),
    env: Optional[str] = typer.Option(None, help="environment name (env.name)"),
    algo: Optional[str] = typer.Option(None, help="ppo or grpo (algo.name)"),
    search: Optional[str] = typer.Option(None, help="none, best-of-n, beam or lookahead (search.strategy)"),
    policy: Optional[str] = typer.Option(None, help="policy to train (policy.name)"),
    steps: Optional[int] = typer.Option(None, min=1, help="training steps (trainer.steps)"),
    seed: Optional[int] = typer.Option(None, help="run seed (trainer.seed)"),
    run_dir: Optional[Path] = typer.Option(None, help="run directory (trainer.run_dir)"),
    save_every: Optional[int] = typer.Option(None, min=0, help="checkpoint every K steps (trainer.save_every)"),
    eval_every: Optional[int] = typer.Option(None, min=0, help="evaluate every K steps (trainer.eval_every)"),
    backend: Optional[str] = typer.Option(None, help="what generates rollouts and evaluations: hf or vllm "
                                          "(policy.backend)"),
    set_: List[str] = typer.Option([], "--set", help="override any field: section.key=value, repeatable"),
    resume: Optional[Path] = typer.Option(None, help="continue the run in this directory exactly"),
    overwrite: bool = typer.Option(False, help="replace an existing run in the run directory"),
) -> None:
    """Train a policy with PPO or GRPO on search-built rollouts.

    With no config file it trains the embedded SmolLM2-135M with CPU-sized
    defaults. Flags override the file; --set overrides everything.
    """
    from tsr_cli.train.run import Run

    flags = {"env.name": env, "algo.name": algo, "search.strategy": search, "policy.name": policy,
             "trainer.steps": steps, "trainer.seed": seed, "trainer.save_every": save_every,
             "trainer.eval_every": eval_every, "trainer.run_dir": str(run_dir) if run_dir else None,
             "policy.backend": backend}
    with UserError.wrap(ValueError, FileNotFoundError, FileExistsError, OSError, ImportError):
        if resume is not None:
            given = [k for k, v in flags.items() if v is not None] + (["--set"] if set_ else [])
            if config is not None or given:
                raise ValueError("--resume continues a run with its saved config; drop the other flags")
            run = Run.resume(resume)
        else:
            run = Run.create(_train_config(config, flags, set_), overwrite=overwrite)
    with stop_on_ctrl_c():
        _train_with_progress(run)


@app.command("sft")
def sft_cmd(
    config: Optional[Path] = typer.Option(None, "--config", help="SFT config: a train config plus an "
                                          "`sft:` section (see experiments/sft/)"),
    env: Optional[str] = typer.Option(None, help="environment name (env.name); it needs an expert"),
    policy: Optional[str] = typer.Option(None, help="policy to train (policy.name)"),
    demos: Optional[int] = typer.Option(None, help="expert episodes on training seeds (sft.demos)"),
    epochs: Optional[int] = typer.Option(None, help="passes over the demonstrations (sft.epochs)"),
    seed: Optional[int] = typer.Option(None, help="run seed (trainer.seed)"),
    run_dir: Optional[Path] = typer.Option(None, help="run directory (trainer.run_dir)"),
    set_: List[str] = typer.Option([], "--set", help="override any field, sft.* included: "
                                   "section.key=value, repeatable"),
    resume: Optional[Path] = typer.Option(None, help="continue the SFT run in this directory from its "
                                          "last checkpoint (sft.save_every, or the one Ctrl-C saved)"),
    overwrite: bool = typer.Option(False, help="replace an existing run in the run directory"),
) -> None:
    """Supervised warm start: train a policy on the environment's expert playing training seeds.

    The demonstrations go through the same agent protocol and chat template as
    RL rollouts. Writes a run directory with checkpoints/step_N (usable as
    `--policy` or `policy.name`), metrics.jsonl and summary.json. Ctrl-C saves
    the step it finishes; --resume continues exactly where the run stopped.
    """
    from tsr_cli.progress import progress_bar
    from tsr_cli.sft import SFTRun, check_env, load_sft_config
    from tsr_cli.train.config import parse_override
    from tsr_cli.train.run import stop_requested

    flags = {"env.name": env, "policy.name": policy, "sft.demos": demos, "sft.epochs": epochs,
             "trainer.seed": seed, "trainer.run_dir": str(run_dir) if run_dir else None}
    with UserError.wrap(ValueError, FileNotFoundError, FileExistsError, OSError, ImportError):
        overrides = {k: v for k, v in flags.items() if v is not None}
        if resume is not None:
            if config is not None or overrides or set_:
                raise ValueError("--resume continues a run with its saved config; drop the other flags")
            run = SFTRun.resume(resume)
        else:
            overrides.update(dict(parse_override(item) for item in set_))
            cfg = load_sft_config(config, overrides)
            check_env(cfg)
            run = SFTRun.create(cfg, overwrite=overwrite)
    err.print(f"run directory: {run.dir}")
    label = f"sft {run.cfg.train.env.name} · {run.cfg.train.policy.name}"
    with stop_on_ctrl_c(), progress_bar(err, label, run.total_steps) as advance:
        advance(run.trainer.step)
        summary = run.train(on_step=lambda record: advance(1), should_stop=stop_requested)
    _print_metrics(f"{label} · {run.dir}", summary)


def _train_config(config: Optional[Path], flags: dict, sets: List[str]):
    from tsr_cli.train.config import load_config, parse_override

    overrides = {k: v for k, v in flags.items() if v is not None}
    for item in sets:
        key, value = parse_override(item)
        overrides[key] = value
    return load_config(config, overrides)


def _train_with_progress(run) -> None:
    from tsr_cli.progress import progress_bar
    from tsr_cli.train.plots import plot_runs

    if not run.world.is_main:  # under torchrun, rank 0 reports for every rank
        run.train()
        return
    cfg = run.cfg
    label = f"train {cfg.env.name} · {cfg.algo.name} · {cfg.search.strategy}"
    err.print(f"run directory: {run.dir}")
    with progress_bar(err, label, cfg.trainer.steps) as advance:
        advance(run.trainer.step)
        run.on_step = lambda record: advance(1) if record["step"] > 0 else None
        summary = run.train()
    plot_runs([run.dir])
    _print_metrics(f"{label} · {run.dir}", summary)


@app.command("plot")
def plot_cmd(
    run_dirs: List[Path] = typer.Argument(..., help="run directories to overlay"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="write curves.png here instead of each run dir"),
) -> None:
    """Write learning-curve PNGs (held-out success, return, loss, cost) for runs."""
    from tsr_cli.train.plots import plot_runs

    with UserError.wrap(FileNotFoundError, ValueError):
        for path in plot_runs(run_dirs, out_dir):
            out.print(str(path))


@app.command("compare")
def compare_cmd(
    sweep: Path = typer.Argument(..., help="sweep YAML: a base config, arms of overrides, seeds "
                                 "(see experiments/sweeps/)"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="output directory; default results/<sweep name>"),
    table_only: bool = typer.Option(False, "--table-only", help="rebuild tables, curves and plots from "
                                    "results.csv and the run dirs; train nothing"),
    status: bool = typer.Option(False, "--status", help="show each cell's progress and the time spent "
                                "and left (estimated from the measured seconds per step); train nothing"),
    arms: List[str] = typer.Option([], "--arm", help="run only this arm (repeatable); with --seed, "
                                   "one cell: its final success re-runs exactly"),
    seeds: List[int] = typer.Option([], "--seed", help="run only this seed (repeatable)"),
    keep_recorded: bool = typer.Option(False, "--keep-recorded", help="keep the cells OUT/results.csv "
                                       "already has a row of when their run dirs are gone (a grid "
                                       "committed from another machine); without it they train again"),
    executor: str = typer.Option("local", help="local: runs one after another here; ray: every "
                                 "unfinished run a Ray task (pip install 'tsr\\[ray]')"),
    address: Optional[str] = typer.Option(None, help="Ray cluster to join (default: RAY_ADDRESS, "
                                          "else a local Ray on this machine's cores)"),
) -> None:
    """Run an ablation sweep (arms x seeds), resuming where it stopped; write tables, curves, plots.

    Runs go one after another, or in parallel as Ray tasks with --executor ray;
    an interrupted sweep resumes every run that has not finished, from its last
    checkpoint. A run that fails is reported and the others go on; the sweep
    then exits 1 and writes no tables, and running it again retries the failed
    runs. To check one cell of a committed result, re-run it into a new
    directory, e.g. `tsr compare experiments/sweeps/sokoban_grpo_sft.yaml
    --arm none --seed 1 --out /tmp/cell`, and compare its results.csv row.
    Run dirs stay on the machine that made them: to continue a committed grid
    elsewhere, add --keep-recorded, and only the cells results.csv lacks train.
    """
    from tsr_cli import compare
    from tsr_cli.executors import make_executor
    from tsr_cli.train.run import check_instances

    with UserError.wrap(ValueError, FileNotFoundError, OSError, TypeError, KeyError, ImportError):
        spec = compare.load_sweep(sweep)
        target = out_dir or compare.default_out(spec)
        if status:
            _print_status(spec, target)
            return
        with stop_on_ctrl_c():  # a `start:` trains here first; Ctrl-C saves it for resume
            planned = [] if table_only else compare.plan(spec, target, keep_recorded=keep_recorded)
        runs = [] if table_only else compare.select(planned, arms, seeds)
        for run in runs:  # every cell's env args, before the first cell trains
            check_instances(run.cfg)
        engine = make_executor(executor, address, spec.resources)
    if runs:
        try:
            with stop_on_ctrl_c() if engine.name == "local" else cancel_on_ctrl_c():
                failed = _run_cells(spec, runs, planned, target, engine)
        except (Interrupted, RunFault) as exc:  # re-running the sweep resumes it, cell by cell
            exc.resume = " ".join(["tsr compare", str(sweep), *(["--out", str(out_dir)] if out_dir else []),
                                   *(f"--arm {arm}" for arm in arms), *(f"--seed {s}" for s in seeds),
                                   *(["--keep-recorded"] if keep_recorded else [])])
            raise
        if failed:
            err.print(f"{failed} of {len(runs)} runs failed; run the same command again to retry them "
                      "(finished runs are kept)", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(1)
    with UserError.wrap(FileNotFoundError):
        written = compare.write_outputs(spec, target)
    out.print((target / "table.md").read_text(), markup=False, highlight=False, soft_wrap=True)
    for path in written:
        out.print(str(path), highlight=False)


def _print_status(spec, target: Path) -> None:
    """`tsr compare --status`: a row per cell, then the totals (estimates marked as such)."""
    from tsr_cli import sweep_status

    frame = sweep_status.cell_status(spec, target)
    out.print(sweep_status.table(frame, f"{spec.name} · {target}"))
    out.print(sweep_status.totals_line(sweep_status.totals(frame)), highlight=False)


def _run_cells(spec, runs, planned, target: Path, engine) -> int:
    """Train the sweep's runs with `engine`: a bar over runs, a line per finished run; returns failures."""
    from tsr_cli import compare
    from tsr_cli.progress import progress_bar

    states = Table("run", "state", title=f"sweep {spec.name} -> {target}", caption=f"executor: {engine.name}")
    for run in runs:
        states.add_row(str(run.dir), run.state)
    err.print(states)
    results = []

    def report(result) -> None:
        results.append(result)
        err.print(_cell_line(result), markup=False, highlight=False, soft_wrap=True)
        if result.run.state != "done" and not result.busy:  # tables follow results.csv, cell by cell
            try:
                compare.write_outputs(spec, target)
            except FileNotFoundError as exc:
                err.print(f"tables not refreshed: {exc}", markup=False, highlight=False, soft_wrap=True)

    with engine, progress_bar(err, f"compare {spec.name}", len(runs)) as advance:
        compare.run_sweep(runs, target, advance, cells=[(r.arm, r.seed) for r in planned],
                          executor=engine, on_result=report)
    return sum(not result.ok for result in results)


def _cell_line(result) -> str:
    run = result.run
    if not result.ok:
        return f"failed  {run.arm} seed {run.seed}: {result.error}"
    verb = "kept  " if run.state == "done" else "done  "
    line = (f"{verb}  {run.arm} seed {run.seed}: held-out success "
            f"{result.summary.get('final_val_success_rate', float('nan')):.3f}, "
            f"{result.summary.get('wall_seconds', float('nan')):.1f} s")
    if result.resumed_from is not None:
        line += f" (resumed from step {result.resumed_from})"
    if result.copied_from:
        line += f" (trained on {result.copied_from}; results copied here, checkpoints stay there)"
    return line


def _checkpoint_defaults(policy: str) -> dict:
    """Env and protocol settings saved with a tsr checkpoint, if `policy` is one."""
    from tsr_cli.train.checkpoint import checkpoint_defaults

    with UserError.wrap(ValueError, OSError):
        return checkpoint_defaults(Path(policy))


def _make_env_factory(name: str, env_args: List[str]):
    import envs

    kwargs = _parse_kv(env_args, "--env-arg")
    if name not in envs.registered():
        raise UserError(f"unknown environment {name!r}; choose one of {', '.join(envs.registered())}")
    with UserError.wrap(TypeError, ValueError, FileNotFoundError):
        return envs.factory(name, **kwargs)


def _parse_kv(items: List[str], flag: str) -> dict:
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} expects key=value, got {item!r}")
        out[key.strip()] = _yaml_value(raw)
    return out


def _yaml_value(raw: str):
    """A flag value read as YAML (`[8,8]`, `2`, `true`), else kept as the text given.

    YAML reads text that starts with `#` as a comment, i.e. None, and an
    XSB level always starts with `#`; text that is not valid YAML stays text.
    """
    import yaml

    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        return raw
    return raw if value is None and raw.strip() not in ("null", "~", "Null", "NULL") else value


def _load_policy(spec: str, seed: int, env_name: str, backend: str = "hf", **kw):
    import tsr_cli.train.checkpoint  # noqa: F401  (registers the checkpoint loader)
    from tsr_cli.policies import load_policy

    with UserError.wrap(ValueError, FileNotFoundError, OSError, ImportError):
        return load_policy(spec, seed=seed, env_names=[env_name], backend=backend, **kw)


def _progress(label: str, total: int):
    from tsr_cli.progress import progress_bar

    return progress_bar(err, label, total)


def _print_metrics(title: str, summary: dict) -> None:
    table = Table("metric", "value", title=title)
    for key, value in summary.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    out.print(table)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the CLI; user mistakes print one line on stderr and return 2."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="tsr", standalone_mode=False)
    except (typer.Exit, click.exceptions.Exit) as exc:
        return exc.exit_code
    except (typer.Abort, click.exceptions.Abort):
        return 130
    except KeyboardInterrupt:  # outside training (which raises Interrupted): nothing to resume
        print("tsr: interrupted", file=sys.stderr)
        return 130
    except (typer.exceptions.TyperException, click.ClickException) as exc:
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        print(f"tsr: error: {' '.join(message.split())}", file=sys.stderr)
        return 2
    except UserError as exc:
        print(f"tsr: error: {exc}", file=sys.stderr)
        return 2
    except RunFault as exc:
        print(f"tsr: error: {exc}", file=sys.stderr)
        return 1
    except Interrupted as exc:
        print(f"tsr: {exc}", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
