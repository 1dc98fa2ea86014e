"""A sweep's arm table and plots, from its per-run results and learning curves.

One row per arm (in sweep order):
- held-out success (the headline: greedy unless the sweep says otherwise)
  and, when evaluated, sampled success, each as the mean over seeds with its
  95% Student-t interval;
- the paired difference from each reference arm (`none`, the
  compute-matched `none-matched`, and `beam`, the paper's TSR): the mean
  of the per-seed differences with a 95% percentile-bootstrap interval
  over seeds (`tsr_cli.stats`). Arms are
  paired by seed, since every arm trains and evaluates on the same instance
  seeds;
- the gain over the start: final minus initial held-out success, paired by
  run, with its bootstrap interval (whether the arm learned at all: a
  baseline that does not improve its start makes the comparison void);
- the trend over the last quarter: each run's least-squares slope of held-out
  success over the evaluations in its last quarter of steps, per 100 steps,
  as the mean over seeds with its t interval (is the curve flat where the
  table reads it?);
- speed: steps until held-out success reaches a target, which is `threshold`
  x the first reference arm's mean final success (1.0: "as good as plain
  sampling ends"), or x the best arm's when the sweep has no reference arm;
- the final policy's invalid-answer rate on the held-out episodes (no search),
  and its entropy (the mean over the run's last FINAL_STEPS training steps):
  a search-trained policy that answers invalidly without search keeps a high
  entropy (issue 12);
- compute: each run's generated tokens, real and simulated env steps, the
  tokens of the sibling rows it trained on (issue 12's cost) and wall time,
  averaged over seeds.

The caption gives the ceiling when the environment has an expert: the
expert's success on the same held-out instances (`tsr_cli.sft.expert_success`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from tsr_cli.stats import mean_interval, paired_difference

#: compute columns of the arm table: the mean over seeds of each run's total
COMPUTE = ("tokens_generated", "env_steps", "sim_env_steps", "sibling_tokens", "wall_seconds")
#: arms every other arm is compared with, when the sweep has them
DEFAULT_REFERENCES = ("none", "none-matched", "beam")
#: the training steps a run's final entropy is averaged over
FINAL_STEPS = 5
#: the trend is fitted over the evaluations in this last fraction of a run's steps
TREND_SPAN = 0.25


def references(results: pd.DataFrame, wanted=DEFAULT_REFERENCES) -> list[str]:
    arms = set(results["arm"])
    return [arm for arm in wanted if arm in arms]


def threshold_target(results: pd.DataFrame, threshold: float, reference: str | None = None) -> float:
    """`threshold` x the reference arm's mean final success (the best arm's without one)."""
    finals = results.groupby("arm", sort=False)["final_val_success_rate"].mean()
    base = finals[reference] if reference is not None and reference in finals else finals.max()
    return threshold * base


def steps_to_threshold(results: pd.DataFrame, curves: pd.DataFrame, threshold: float,
                       reference: str | None = None) -> pd.Series:
    """Per run, the first step whose held-out success reaches the target; NaN if it never does.

    When the target is 0 there is nothing to reach, so every run gets NaN
    rather than a meaningless step 0.
    """
    target = threshold_target(results, threshold, reference)
    held_out = curves.dropna(subset=["val_success_rate"])
    hits = held_out[held_out["val_success_rate"] >= target - 1e-9]
    first = hits.groupby(["arm", "seed"])["step"].min() if target > 0 else pd.Series(dtype=float)
    steps = [first.get((arm, seed), math.nan) for arm, seed in zip(results["arm"], results["seed"])]
    return pd.Series(steps, index=results.index, dtype=float)


def final_entropy(results: pd.DataFrame, curves: pd.DataFrame, last: int = FINAL_STEPS) -> pd.Series:
    """Per run, the policy's mean entropy over its last `last` training steps (NaN if unlogged)."""
    logged = curves.dropna(subset=["entropy"]) if "entropy" in curves else curves.iloc[:0]
    means = logged.sort_values("step").groupby(["arm", "seed"])["entropy"].apply(lambda e: e.tail(last).mean())
    values = [means.get((arm, seed), math.nan) for arm, seed in zip(results["arm"], results["seed"])]
    return pd.Series(values, index=results.index, dtype=float)


def last_quarter_trend(results: pd.DataFrame, curves: pd.DataFrame, span: float = TREND_SPAN) -> pd.Series:
    """Per run, the least-squares slope of held-out success against step over the evaluations
    at steps >= (1 - span) x its last step, per 100 steps; NaN with fewer than 3 such points."""
    held_out = curves.dropna(subset=["val_success_rate"])
    slopes = {}
    for (arm, seed), run in held_out.groupby(["arm", "seed"]):
        late = run[run["step"] >= (1 - span) * run["step"].max()]
        if len(late) >= 3:
            slopes[(arm, seed)] = 100 * float(np.polyfit(late["step"], late["val_success_rate"], 1)[0])
    values = [slopes.get((arm, seed), math.nan) for arm, seed in zip(results["arm"], results["seed"])]
    return pd.Series(values, index=results.index, dtype=float)


def arm_table(results: pd.DataFrame, refs: list[str] | None = None) -> pd.DataFrame:
    """One row per arm (in sweep order): intervals, paired differences, speed, compute."""
    refs = references(results) if refs is None else refs
    by_seed = {arm: runs.set_index("seed") for arm, runs in results.groupby("arm", sort=False)}
    return pd.DataFrame([_arm_row(arm, by_seed, refs) for arm in by_seed])


def _arm_row(arm: str, by_seed: dict, refs: list[str]) -> dict:
    runs = by_seed[arm]
    success = mean_interval(runs["final_val_success_rate"])
    reached = runs["steps_to_threshold"].dropna() if "steps_to_threshold" in runs else pd.Series(dtype=float)
    first = runs.iloc[0]
    row = {
        "arm": arm, "env": first["env"], "algo": first["algo"], "search": first["search"], "seeds": len(runs),
        "final_val_success": success.text(),
        "final_val_success_mean": success.estimate, "final_val_success_low": success.low,
        "final_val_success_high": success.high,
        "final_val_success_std": runs["final_val_success_rate"].std(ddof=1) if len(runs) > 1 else math.nan,
        "initial_val_success_mean": runs["initial_val_success_rate"].mean(),
        **_gain_over_start(runs),
        "steps_to_threshold": steps_text(reached, len(runs)),
        "steps_to_threshold_mean": reached.mean() if len(reached) else math.nan,
        "seeds_reaching_threshold": len(reached),
        **{key: runs[key].mean() for key in COMPUTE if key in runs},
    }
    trend = runs.get("last_quarter_trend")
    if trend is not None and trend.notna().any():
        interval = mean_interval(trend)
        row.update({"last_quarter_trend": interval.text(signed=True), "last_quarter_trend_mean": interval.estimate,
                    "last_quarter_trend_low": interval.low, "last_quarter_trend_high": interval.high})
    for key in ("final_val_invalid_action_rate", "final_entropy"):
        values = runs.get(key)
        if values is not None and values.notna().any():
            row[key] = values.mean()
    sampled = runs.get("final_val_sampled_success_rate")
    if sampled is not None and sampled.notna().any():
        interval = mean_interval(sampled)
        row.update({"final_val_sampled_success": interval.text(), "final_val_sampled_success_mean": interval.estimate})
    for ref in refs:
        if ref == arm:
            continue
        diff = paired_difference(runs["final_val_success_rate"], by_seed[ref]["final_val_success_rate"])
        row.update({f"diff_vs_{ref}": diff.text(signed=True), f"diff_vs_{ref}_mean": diff.estimate,
                    f"diff_vs_{ref}_low": diff.low, f"diff_vs_{ref}_high": diff.high})
    return row


def _gain_over_start(runs: pd.DataFrame) -> dict:
    """Final minus initial held-out success, paired by seed: whether the arm learned at all."""
    if runs["initial_val_success_rate"].isna().all():
        return {}
    gain = paired_difference(runs["final_val_success_rate"], runs["initial_val_success_rate"])
    return {"gain_over_start": gain.text(signed=True), "gain_over_start_mean": gain.estimate,
            "gain_over_start_low": gain.low, "gain_over_start_high": gain.high}


def mean_std(values: pd.Series, digits: int = 3) -> str:
    """`0.422 ± 0.031` (sample std over seeds); one seed has no spread, so just its value."""
    values = values.dropna()
    if values.empty:
        return "—"
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def steps_text(reached: pd.Series, seeds: int) -> str:
    """Mean step over the seeds that reached the target, saying how many did when not all."""
    if reached.empty:
        return "—"
    text = f"{reached.mean():.1f}"
    return text if len(reached) == seeds else f"{text} ({len(reached)}/{seeds} seeds)"


def markdown_columns(table: pd.DataFrame, headline: str = "held-out success") -> list[tuple]:
    """(column, title, formatter) for the columns this table has."""
    columns = [("arm", "arm", str), ("search", "search", str), ("seeds", "seeds", str),
               ("final_val_success", f"{headline} (95%)", str)]
    if "final_val_sampled_success" in table:
        columns.append(("final_val_sampled_success", "sampled success (95%)", str))
    diffs = [column.removeprefix("diff_vs_") for column in table.columns
             if column.startswith("diff_vs_") and not column.endswith(("_mean", "_low", "_high"))]
    order = {ref: i for i, ref in enumerate(DEFAULT_REFERENCES)}
    for ref in sorted(diffs, key=lambda ref: order.get(ref, len(order))):  # none first, whatever row came first
        columns.append((f"diff_vs_{ref}", f"Δ vs {ref} (paired, 95%)", str))
    if "gain_over_start" in table:
        columns.append(("gain_over_start", "gain over start (paired, 95%)", str))
    if "last_quarter_trend" in table:
        columns.append(("last_quarter_trend", "last-quarter trend / 100 steps (95%)", str))
    if "final_val_invalid_action_rate" in table:
        columns.append(("final_val_invalid_action_rate", "invalid answers", "{:.1%}".format))
    if "final_entropy" in table:
        columns.append(("final_entropy", "final entropy", "{:.2f}".format))
    columns += [("steps_to_threshold", "steps to target", str),
                ("tokens_generated", "gen. tokens / run", "{:,.0f}".format),
                ("env_steps", "env steps / run", "{:,.0f}".format),
                ("sim_env_steps", "sim. env steps / run", "{:,.0f}".format)]
    if table.get("sibling_tokens", pd.Series(dtype=float)).fillna(0).any():
        columns.append(("sibling_tokens", "sibling tokens / run", "{:,.0f}".format))
    columns += [("wall_seconds", "wall s / run", "{:,.1f}".format)]
    return columns


def to_markdown(table: pd.DataFrame, caption: str = "", headline: str = "held-out success") -> str:
    """A GitHub markdown table (pandas' own needs `tabulate`, which is not a dependency)."""
    columns = markdown_columns(table, headline)
    header = [title for _, title, _ in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for _, row in table.iterrows():
        cells = [fmt(row[key]) if key in row and not _missing(row[key]) else "—" for key, _, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return (caption + "\n\n" if caption else "") + "\n".join(lines) + "\n"


def _missing(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def caption(name: str, results: pd.DataFrame, threshold: float, refs: list[str], headline: str,
            notes: list[str] = (), ceiling: float | None = None) -> str:
    reference = refs[0] if refs else None
    target = threshold_target(results, threshold, reference)
    envs = ", ".join(dict.fromkeys(f"{e} · {a}" for e, a in zip(results["env"], results["algo"])))
    against = f"the `{reference}` arm's" if reference else "the best arm's"
    text = (f"# {name}: {envs}\n\n"
            f"Final {headline} as the mean over seeds with its 95% Student-t interval. "
            + (f"Δ: the mean per-seed difference from the named arm (arms share instance seeds), with a "
               f"95% percentile-bootstrap interval over seeds. " if refs else "")
            + f"Steps to target: the first step at which held-out success reaches {threshold:g} x "
            f"{against} mean final success (= {target:.3f}), averaged over the seeds that reach it. "
            f"Last-quarter trend: each run's least-squares slope of held-out success over the evaluations in "
            f"its last quarter of steps, per 100 steps (about 0: flat where the table reads it). "
            f"Compute columns: each run's training totals, averaged over seeds; the token and step counts "
            f"leave out the held-out evaluations, the wall time includes the periodic ones.")
    if ceiling is not None:
        text += (f" Ceiling: the environment's expert succeeds on {ceiling:.3f} of the same held-out instances "
                 f"(played as the runs are evaluated, without search).")
    return text + "".join(f" {note}" for note in notes)


def plot_success(curves: pd.DataFrame, x: str, path: Path) -> Path:
    """Held-out success per arm against `x`: mean over seeds, with the min-max band of the seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    held_out = curves.dropna(subset=["val_success_rate"]).assign(_x=lambda f: f[x])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, runs in held_out.groupby("arm", sort=False):
        stats = runs.groupby("step").agg(x=("_x", "mean"), mean=("val_success_rate", "mean"),
                                         lo=("val_success_rate", "min"), hi=("val_success_rate", "max"))
        line, = ax.plot(stats["x"], stats["mean"], marker="o", markersize=3, label=arm)
        ax.fill_between(stats["x"], stats["lo"], stats["hi"], color=line.get_color(), alpha=0.2)
    ax.set_xlabel("training step" if x == "step" else "cumulative generated tokens (mean over seeds)")
    ax.set_ylabel("held-out success (mean, min-max over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
