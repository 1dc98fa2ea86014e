"""`tsr sft`: demonstrations from training seeds, in the tokens RL samples, saved as checkpoints."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import envs
from tsr_cli.cli import main
from tsr_cli.errors import Interrupted
from tsr_cli.evaluate import EVAL_SEED_OFFSET
from tsr_cli.policies import load_policy
from tsr_cli.policies.base import SamplingParams
from tsr_cli.rollout import rollout
from tsr_cli.sft import SFTRun, demo_seeds, expert_success, load_sft_config
from tsr_cli.train.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SOKOBAN = ["--config", str(ROOT / "experiments/sft/sokoban_tiny.yaml"), "--set", "trainer.eval_episodes=4",
           "--set", "policy.tiny_hidden=32", "--set", "policy.tiny_layers=1"]


def sokoban_cfg(tmp_path, **sft):
    overrides = {"trainer.run_dir": str(tmp_path / "run"), "trainer.eval_episodes": 4,
                 "policy.tiny_hidden": 32, "policy.tiny_layers": 1, **{f"sft.{k}": v for k, v in sft.items()}}
    return load_sft_config(ROOT / "experiments/sft/sokoban_tiny.yaml", overrides)


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("sft") / "run"
    code = main(["sft", *SOKOBAN, "--demos", "6", "--epochs", "2", "--run-dir", str(run_dir)])
    assert code == 0
    return run_dir


def test_demo_seeds_are_training_seeds():
    seeds = demo_seeds(0, 500)
    assert len(set(seeds)) == 500 and max(seeds) < EVAL_SEED_OFFSET
    assert seeds == demo_seeds(0, 500) and seeds != demo_seeds(1, 500)


def test_run_directory_contract(sft_run):
    summary = json.loads((sft_run / "summary.json").read_text())
    for key in ("initial_val_success_rate", "final_val_success_rate", "final_val_sampled_success_rate",
                "expert_val_success_rate", "demo_success_rate", "steps", "checkpoint"):
        assert key in summary, key
    assert summary["steps"] == 2 * 1  # 6 demos in batches of 16, twice
    assert summary["expert_val_success_rate"] == 1.0
    step = sft_run / "checkpoints" / f"step_{summary['steps']}"
    assert (step / "tsr_checkpoint.json").is_file() and Path(summary["checkpoint"]) == step
    records = [json.loads(line) for line in (sft_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and all(r["loss"] > 0 for r in records)
    assert load_sft_config(sft_run / "sft.yaml").sft.demos == 6


def test_checkpoint_holds_every_weight_and_evaluates_like_the_run(sft_run, capsys):
    """Full fine-tuning of tiny: all weights are saved (its base init is only a seed)."""
    step = sft_run / "checkpoints/step_2"
    saved = load_file(str(step / "weights.safetensors"))
    fresh = load_policy("tiny", seed=0, env_names=["sokoban"], hidden=32, layers=1).model
    assert {f"policy.{k}" for k, _ in fresh.named_parameters()} == set(saved)
    loaded = load_policy(str(step), seed=0).model
    for name, param in loaded.named_parameters():
        assert torch.equal(param, saved[f"policy.{name}"])
    assert main(["eval", "--policy", str(step), "--episodes", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads((sft_run / "summary.json").read_text())
    assert result["success_rate"] == summary["final_val_success_rate"]


def test_a_train_config_can_start_from_the_checkpoint(sft_run):
    from tsr_cli.train.config import load_config
    from tsr_cli.train.trainer import Trainer

    step = sft_run / "checkpoints/step_2"
    cfg = load_config(ROOT / "experiments/tiny/sokoban_grpo_none.yaml", {"policy.name": str(step)})
    trainer = Trainer(cfg)
    saved = load_file(str(step / "weights.safetensors"))
    for name, param in trainer.model.model.named_parameters():
        assert torch.equal(param, saved[f"policy.{name}"])


def test_demonstrations_are_what_rl_would_sample(tmp_path):
    """A policy that samples exactly the expert's answers, in the learner's tokens and budget,
    through the RL rollout path, produces the very token sequences and masks SFT trains on."""
    cfg = sokoban_cfg(tmp_path, demos=3)
    run = SFTRun.create(cfg)
    codec, budget = run.trainer.policy.codec, cfg.train.policy.max_new_tokens
    answers = {d.seed: [t.completion.token_ids for t in d.turns] for d in run.learner_demos}
    assert all(len(ids) <= budget for turns in answers.values() for ids in turns)
    replay = ScriptedPolicy(codec, answers, run.trainer.protocol)
    result = rollout(replay, run.trainer.make_env, [d.seed for d in run.demos], cfg.train.search,
                     SamplingParams(max_new_tokens=budget), run.trainer.protocol, env_name="sokoban")
    for sampled, learned in zip(result.trajectories, run.learner_demos):
        assert sampled.token_ids() == learned.token_ids()
        assert sampled.loss_mask() == learned.loss_mask()
        assert sum(learned.loss_mask()) == sum(len(t.completion.token_ids) for t in learned.turns) > 0


class ScriptedPolicy:
    """Answers seed s's turn t with the given ids; recognises the seed by its first prompt."""

    def __init__(self, codec, answers, protocol):
        from tsr_cli.agent.episode import Episode

        self.codec, self.name = codec, "scripted"
        self.first = {}
        for seed in answers:
            episode = Episode.start(envs.make("sokoban"), codec, protocol, seed=seed)
            self.first[tuple(episode.prompt())] = seed
        self.answers = answers

    def generate(self, prompts, n, params):
        from tsr_cli.policies.base import Completion

        out = []
        for prompt in prompts:
            # each earlier turn closed two messages (answer, reply) after the first user message
            (seed, turn), = [(s, (prompt.count(self.codec.eos_token_id) - 1) // 2)
                             for p, s in self.first.items() if tuple(prompt[:len(p)]) == p]
            ids = self.answers[seed][turn]
            out.append([Completion(ids, [0.0] * len(ids), self.codec.decode(ids))] * n)
        return out


def test_learning_lowers_the_loss_and_is_reproducible(tmp_path):
    def records(name):
        cfg = sokoban_cfg(tmp_path / name, demos=8, epochs=8, batch_size=4, lr=0.01)
        run = SFTRun.create(cfg)
        seen = []
        run.trainer.fit(run.batch, seen.append)
        return seen

    first = records("a")
    assert first[-1]["loss"] < 0.5 * first[0]["loss"]
    assert [r["loss"] for r in first] == [r["loss"] for r in records("b")]
    lrs = [r["lr"] for r in first]  # (warm-up is one step here) the peak, then cosine decay to a tenth
    assert lrs[0] == max(lrs) == pytest.approx(0.01) and lrs[-1] == pytest.approx(0.001, rel=0.2)
    assert lrs == sorted(lrs, reverse=True)


def test_each_epoch_uses_every_demonstration_once(tmp_path):
    run = SFTRun.create(sokoban_cfg(tmp_path, demos=21, batch_size=4))
    lengths = run.batch.attention_mask.sum(1)
    batches = run.trainer._minibatches(lengths)
    assert sorted(torch.cat(batches).tolist()) == list(range(21))
    assert max(len(b) for b in batches) == 4


def test_eval_expert_from_the_cli(capsys):
    assert main(["eval", "--env", "frozenlake", "--policy", "expert", "--max-turns", "10",
                 "--actions-per-turn", "1", "--answer-only", "--episodes", "20", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["success_rate"] > 0.5 and result["invalid_action_rate"] == 0.0


def test_expert_success_is_the_ceiling_tsr_eval_measures(capsys):
    """What `tsr compare` prints as a sweep's ceiling: the expert on the run's own held-out seeds."""
    cfg = load_config(None, {"env.name": "frozenlake", "env.max_turns": 10, "env.actions_per_turn": 1,
                             "env.answer_only": True, "trainer.eval_episodes": 20})
    assert main(["eval", "--env", "frozenlake", "--policy", "expert", "--max-turns", "10",
                 "--actions-per-turn", "1", "--answer-only", "--episodes", "20", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert expert_success(cfg) == result["success_rate"]


class NoExpertEnv(envs.TextEnv):
    action_names = ["wait"]


@pytest.mark.parametrize("args,message", [
    (["--env", "chess", "--policy", "tiny", "--demos", "4"], "unknown environment"),
    (["--env", "sokoban", "--policy", "tiny", "--demos", "0"], "sft.demos must be >= 1"),
    (["--env", "noexpert", "--policy", "tiny", "--demos", "4"], "has no expert"),
    (["--env", "sokoban", "--policy", "random", "--demos", "4"], "no weights to train"),
    (["--env", "sokoban", "--policy", "tiny", "--demos", "4", "--set", "sft.bogus=1"], "sft.bogus"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(envs.base._REGISTRY, "noexpert", NoExpertEnv)
    code = main(["sft", *args, "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("tsr: error:") and message in err and "\n" not in err


def test_webshop_demonstrations_follow_the_learners_spelling(tmp_path):
    """The tiny tokenizer re-spells queries (`7 . 5`, dropped unknown words); the expert then
    acts on the shop those spellings lead to, and both episodes stay in step."""
    cfg = load_sft_config(ROOT / "experiments/sft/webshop_tiny.yaml", {
        "sft.demos": 3, "policy.tiny_hidden": 32, "policy.tiny_layers": 1,
        "trainer.run_dir": str(tmp_path / "run")})
    run = SFTRun.create(cfg)
    for teacher, learner in zip(run.teacher_demos, run.demos):
        assert teacher.actions() == learner.actions() and teacher.success == learner.success
        assert learner.actions()[0].startswith("search [")
    assert any(d.success for d in run.demos)


def _stop_at(trainer, step):
    return lambda: trainer.step == step


@pytest.mark.parametrize("stop,resume_from", [(5, 5), (5, 4), (7, 6)])
def test_a_stopped_run_resumes_to_the_same_weights_and_log(tmp_path, stop, resume_from):
    """9 steps (10 demos in 4s: 3 an epoch, 3 epochs), checkpoints every 2. Stopped after step
    `stop` (Ctrl-C saves it), then resumed from it or from an earlier checkpoint, as a kill
    leaves it: mid-epoch (steps 4, 5) or at an epoch's end (6). It ends where an uninterrupted
    run ends, having logged every step once."""
    def cfg(name):
        return sokoban_cfg(tmp_path / name, demos=10, batch_size=4, epochs=3, save_every=2, lr=0.01)

    whole = SFTRun.create(cfg("whole"))
    expected = whole.train()

    stopped = SFTRun.create(cfg("stopped"))
    with pytest.raises(Interrupted, match=f"after step {stop} of 9; saved checkpoint step_{stop}") as caught:
        stopped.train(should_stop=_stop_at(stopped.trainer, stop))
    assert caught.value.resume == f"tsr sft --resume {stopped.dir}"
    checkpoints = stopped.dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == sorted({f"step_{s}" for s in (*range(2, stop, 2), stop)})
    for step in range(resume_from + 1, stop + 1):
        shutil.rmtree(checkpoints / f"step_{step}", ignore_errors=True)
    resumed = SFTRun.resume(stopped.dir)
    assert resumed.trainer.step == resume_from
    assert resumed.trainer.initial_eval == whole.trainer.initial_eval
    summary = resumed.train()

    for key in ("final_val_success_rate", "final_val_sampled_success_rate", "steps"):
        assert summary[key] == expected[key]
    final = load_file(str(resumed.dir / "checkpoints/step_9/weights.safetensors"))
    reference = load_file(str(whole.dir / "checkpoints/step_9/weights.safetensors"))
    assert all(torch.equal(final[name], reference[name]) for name in reference)

    def losses(run):
        return [(r["step"], r["epoch"], r["loss"]) for r in map(json.loads, (run.dir / "metrics.jsonl").open())]
    assert losses(resumed) == losses(whole) and [s for s, _, _ in losses(whole)] == list(range(1, 10))


def test_resume_from_the_cli_and_its_mistakes(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["sft", *SOKOBAN, "--demos", "6", "--epochs", "2", "--set", "sft.save_every=1",
                 "--run-dir", str(run_dir)]) == 0
    (run_dir / "summary.json").unlink()  # as a kill during the final evaluations leaves it
    shutil.rmtree(run_dir / "checkpoints/step_2")
    capsys.readouterr()
    assert main(["sft", "--resume", str(run_dir)]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 2
    for args, message in ((["--resume", str(run_dir), "--demos", "3"], "drop the other flags"),
                          (["--resume", str(run_dir)], "has finished"),
                          (["--resume", str(tmp_path / "none")], "no SFT run to resume")):
        capsys.readouterr()
        assert main(["sft", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("tsr: error:") and message in err and "\n" not in err, err


def test_ctrl_c_saves_the_step_and_prints_how_to_resume(tmp_path, monkeypatch, capsys):
    """SIGINT during step 2 of `tsr sft`: the step finishes and is saved, exit 130 with the
    resume command; `tsr sft --resume` then finishes the run."""
    import os
    import signal

    from tsr_cli.sft import SFTTrainer

    real = SFTTrainer._update

    def update(self, batch, rows):
        record = real(self, batch, rows)
        if self.step == 1:  # the update of step 2 (step counts up after it)
            os.kill(os.getpid(), signal.SIGINT)
        return record

    monkeypatch.setattr(SFTTrainer, "_update", update)
    run_dir = tmp_path / "run"
    assert main(["sft", *SOKOBAN, "--demos", "8", "--epochs", "2", "--set", "sft.batch_size=4",
                 "--run-dir", str(run_dir)]) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (f"tsr: interrupted after step 2 of 4; saved checkpoint step_2; "
                    f"resume with: tsr sft --resume {run_dir}")
    monkeypatch.undo()
    assert main(["sft", "--resume", str(run_dir)]) == 0
    assert [r["step"] for r in map(json.loads, (run_dir / "metrics.jsonl").open())] == [1, 2, 3, 4]
