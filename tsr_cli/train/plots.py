"""Learning-curve PNGs for one or more run directories (`tsr plot`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tsr_cli.train.run import write_curves

PANELS = [
    ("val_success_rate", "held-out success"),
    ("train_return", "train return"),
    ("loss", "loss"),
    ("tokens_generated", "generated tokens (cumulative)"),
    ("env_steps", "real env steps (cumulative)"),
    ("sim_env_steps", "simulated env steps (cumulative)"),
]


def load_curves(run_dir: Path) -> pd.DataFrame:
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no metrics.jsonl)")
    return write_curves(run_dir)


def plot_runs(run_dirs: list[Path], out: Path | None = None) -> list[Path]:
    """One figure of six panels with every run overlaid; written into `out` or each run dir."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {Path(d).name or str(d): load_curves(Path(d)) for d in run_dirs}
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, (column, title) in zip(axes.flat, PANELS):
        for label, frame in curves.items():
            data = frame[["step", column]].dropna()
            ax.plot(data["step"], data[column], marker="o" if column.startswith("val") else None,
                    markersize=3, label=label)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    targets = [Path(out)] if out else [Path(d) for d in run_dirs]
    written = []
    for target in targets:
        target.mkdir(parents=True, exist_ok=True)
        fig.savefig(target / "curves.png", dpi=110)
        written.append(target / "curves.png")
    plt.close(fig)
    return written
