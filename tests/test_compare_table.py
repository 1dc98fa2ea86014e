"""`tsr compare`'s table as a pure function: thresholds, trends, intervals, pairing, the caption."""

import math

import pandas as pd
import pytest

from tsr_cli import compare


def hand_made():
    """Arm a: 3 seeds, final 0.5/0.7/0.6 (mean 0.6, std 0.1); b never gets there; c: one of two seeds does."""
    finals = {("a", 0): 0.5, ("a", 1): 0.7, ("a", 2): 0.6, ("b", 0): 0.2, ("b", 1): 0.1,
              ("c", 0): 0.4, ("c", 1): 0.0}
    curves_by_run = {("a", 0): [0.0, 0.3, 0.5], ("a", 1): [0.0, 0.4, 0.7], ("a", 2): [0.0, 0.2, 0.6],
                     ("b", 0): [0.0, 0.1, 0.2], ("b", 1): [0.0, 0.0, 0.1],
                     ("c", 0): [0.1, 0.35, 0.4], ("c", 1): [0.0, 0.0, 0.0]}
    results = pd.DataFrame([
        {"arm": arm, "env": "frozenlake", "algo": "grpo", "search": "beam" if arm == "a" else "none",
         "seed": seed, "final_val_success_rate": final, "initial_val_success_rate": 0.0,
         "tokens_generated": 1000 * (seed + 1), "env_steps": 10, "sim_env_steps": 40 if arm == "a" else 0,
         "wall_seconds": 2.5}
        for (arm, seed), final in finals.items()])
    curves = pd.DataFrame([{"arm": arm, "seed": seed, "step": 5 * i, "val_success_rate": value}
                           for (arm, seed), values in curves_by_run.items() for i, value in enumerate(values)])
    return results, curves


def test_steps_to_threshold_is_first_step_reaching_fraction_of_best_arm():
    results, curves = hand_made()
    assert compare.threshold_target(results, 0.5) == pytest.approx(0.3)  # best arm a: mean 0.6
    steps = compare.steps_to_threshold(results, curves, 0.5)
    assert list(steps[:3]) == [5.0, 5.0, 10.0]
    assert steps[3:5].isna().all() and steps[5] == 5.0 and math.isnan(steps[6])
    nothing_learned = results.assign(final_val_success_rate=0.0)
    assert compare.steps_to_threshold(nothing_learned, curves, 0.5).isna().all()


def test_final_entropy_is_each_runs_mean_over_its_last_training_steps():
    results, _ = hand_made()
    rows = [{"arm": "a", "seed": 0, "step": 0, "entropy": math.nan}]  # step 0: the initial evaluation
    rows += [{"arm": "a", "seed": 0, "step": step, "entropy": float(step)} for step in range(1, 9)]
    rows += [{"arm": "b", "seed": 1, "step": step, "entropy": 2.0} for step in range(1, 3)]
    entropy = compare.final_entropy(results, pd.DataFrame(rows), last=5)
    assert entropy[0] == pytest.approx((4 + 5 + 6 + 7 + 8) / 5)  # steps 4-8
    assert entropy[4] == 2.0 and entropy.drop([0, 4]).isna().all()  # unlogged runs: NaN
    table = compare.arm_table(results.assign(final_entropy=entropy))
    assert table.set_index("arm").loc["a", "final_entropy"] == pytest.approx(6.0)  # seeds 1-2 unlogged
    assert "| final entropy |" in compare.to_markdown(table) and "| 6.00 |" in compare.to_markdown(table)


def test_last_quarter_trend_is_each_runs_slope_over_its_last_quarter_per_100_steps():
    results, _ = hand_made()
    rising = [{"arm": "a", "seed": 0, "step": step, "val_success_rate": 0.001 * step} for step in range(0, 201, 10)]
    flat = [{"arm": "a", "seed": 1, "step": step, "val_success_rate": 0.9 if step < 150 else 0.5}
            for step in range(0, 201, 10)]
    short = [{"arm": "a", "seed": 2, "step": step, "val_success_rate": 0.5} for step in (0, 10)]  # < 3 points
    trend = compare.last_quarter_trend(results, pd.DataFrame(rising + flat + short))
    assert trend[0] == pytest.approx(0.1) and trend[1] == pytest.approx(0.0, abs=1e-12)  # 150-200 only
    assert trend.drop([0, 1]).isna().all()
    row = compare.arm_table(results.assign(last_quarter_trend=trend)).set_index("arm").loc["a"]
    assert row["last_quarter_trend_mean"] == pytest.approx(0.05)
    assert row["last_quarter_trend"].startswith("+0.050 [")


def test_arm_table_mean_std_and_compute():
    results, curves = hand_made()
    results["steps_to_threshold"] = compare.steps_to_threshold(results, curves, 0.5)
    table = compare.arm_table(results).set_index("arm")
    assert list(table.index) == ["a", "b", "c"]
    assert table.loc["a", "final_val_success"] == "0.600 [0.352, 0.848]"  # t(0.975, 2) = 4.303
    assert table.loc["a", "final_val_success_std"] == pytest.approx(0.1)
    assert table.loc["a", "steps_to_threshold"] == "6.7" and table.loc["b", "steps_to_threshold"] == "—"
    assert table.loc["c", "steps_to_threshold"] == "5.0 (1/2 seeds)"
    assert table.loc["a", "tokens_generated"] == 2000 and table.loc["b", "sim_env_steps"] == 0
    assert compare.mean_std(pd.Series([0.25])) == "0.250"
    assert table.loc["a", "gain_over_start_mean"] == pytest.approx(0.6)  # every run started at 0
    markdown = compare.to_markdown(table.reset_index(), "caption")
    assert markdown.startswith("caption\n") and "| a | beam | 3 | 0.600 [0.352, 0.848] | +0.600 [" in markdown
    assert "held-out success (95%)" in markdown and "gain over start (paired, 95%)" in markdown


def test_gain_over_start_pairs_each_run_with_its_own_start():
    results, _ = hand_made()
    results["initial_val_success_rate"] = results["final_val_success_rate"] - 0.1  # each run gained 0.1
    table = compare.arm_table(results).set_index("arm")
    assert table.loc["a", "gain_over_start"] == "+0.100 [+0.100, +0.100]"
    no_start = compare.arm_table(results.assign(initial_val_success_rate=float("nan")))
    assert "gain_over_start" not in no_start


def test_arm_table_pairs_arms_by_seed_against_the_references():
    results, curves = hand_made()
    names = {"a": "beam", "b": "none", "c": "none-matched"}
    results["arm"], curves["arm"] = results["arm"].map(names), curves["arm"].map(names)
    results["steps_to_threshold"] = compare.steps_to_threshold(results, curves, 1.0, "none")
    table = compare.arm_table(results).set_index("arm")
    # beam - none on seeds 0 and 1 (seed 2 has no none run): 0.3 and 0.6
    assert table.loc["beam", "diff_vs_none_mean"] == pytest.approx(0.45)
    assert table.loc["beam", "diff_vs_none-matched_mean"] == pytest.approx((0.1 + 0.7) / 2)
    assert "diff_vs_none" not in table.loc["none"] or pd.isna(table.loc["none", "diff_vs_none"])
    # the target is none's mean final success (0.15): beam reaches it at step 5 on every seed
    assert compare.threshold_target(results, 1.0, "none") == pytest.approx(0.15)
    assert table.loc["beam", "steps_to_threshold"] == "5.0"
    markdown = compare.to_markdown(table.reset_index(), "", "greedy held-out success")
    assert "Δ vs none (paired, 95%)" in markdown and "Δ vs none-matched (paired, 95%)" in markdown
    assert "| beam | beam | 3 | 0.600 [0.352, 0.848] | +0.450 [+0.300, +0.600] |" in markdown


def test_sibling_arms_are_paired_with_beam_and_show_their_cost():
    """Issue 12's table: Δ vs beam, the final policy's invalid answers, the sibling rows' tokens."""
    results, curves = hand_made()
    names = {"a": "beam", "b": "none", "c": "beam-siblings"}
    results["arm"], curves["arm"] = results["arm"].map(names), curves["arm"].map(names)
    results["final_val_invalid_action_rate"] = results["arm"].map({"beam": 0.9, "none": 0.02, "beam-siblings": 0.1})
    results["sibling_tokens"] = results["arm"].map({"beam": 0, "none": 0, "beam-siblings": 5000})
    results["steps_to_threshold"] = compare.steps_to_threshold(results, curves, 1.0, "none")
    table = compare.arm_table(results).set_index("arm")
    # beam-siblings - beam on seeds 0 and 1: 0.4 - 0.5 and 0.0 - 0.7
    assert table.loc["beam-siblings", "diff_vs_beam_mean"] == pytest.approx(-0.4)
    assert table.loc["beam-siblings", "sibling_tokens"] == 5000
    markdown = compare.to_markdown(table.reset_index())
    assert "Δ vs none (paired, 95%) | Δ vs beam (paired, 95%)" in markdown  # the references' order
    assert "| invalid answers |" in markdown
    assert "sibling tokens / run" in markdown and "| 90.0% |" in markdown and "| 5,000 |" in markdown


def test_the_caption_prints_the_experts_ceiling_on_the_same_instances():
    results, _ = hand_made()
    text = compare.caption("sweep", results, 1.0, [], "greedy held-out success", ceiling=0.78125)
    assert "the environment's expert succeeds on 0.781 of the same held-out instances" in text
    assert "expert" not in compare.caption("sweep", results, 1.0, [], "greedy held-out success")
