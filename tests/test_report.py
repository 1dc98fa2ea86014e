"""README's results block is generated from results/*/table.md (tsr_cli.report), never typed."""

from pathlib import Path

import pytest

from tsr_cli import report

ROOT = Path(__file__).resolve().parents[1]


def test_readme_results_block_matches_the_committed_tables():
    readme = (ROOT / "README.md").read_text()
    expected = report.update(readme, report.render(ROOT / "experiments/sweeps", ROOT / "results"))
    assert readme == expected, "README results are stale: run `python -m tsr_cli.report`"


def test_every_committed_table_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    current = [(name, ROOT / "results") for name in report.sweep_names(ROOT / "experiments/sweeps", ROOT / "results")]
    archived = [(name, ROOT / "results" / archive.results)
                for archive, names in report.archived(ROOT / "experiments/sweeps", ROOT / "results") for name in names]
    assert {archive.results for archive, _ in report.archived(ROOT / "experiments/sweeps", ROOT / "results")} == {
        "first_starts", "pre_fix"}
    assert current + archived, "no committed results"
    for name, results in current + archived:
        table = (results / name / "table.md").read_text()
        rows = [line for line in table.splitlines() if line.startswith("| ")]
        assert rows and all(row in readme for row in rows), name


def made_up_sweeps(tmp_path):
    """sweeps/demo.yaml (arms none x 2 seeds, beam x 1; none seed 0 finished in 3600 s) and
    sweeps/unrun.yaml, with no results; toy.yaml and paper_x.yaml, which `make reproduce` skips."""
    base = ROOT / "experiments/tiny/frozenlake_grpo_none.yaml"
    arms = "arms:\n  - {name: none, set: {search.strategy: none}}\n"
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps/demo.yaml").write_text(
        f"base: {base}\nseeds: [0, 1]\n{arms}  - {{name: beam, seeds: [0], set: {{search.strategy: beam}}}}\n")
    for name in ("unrun", "toy", "paper_x"):
        (tmp_path / f"sweeps/{name}.yaml").write_text(f"base: {base}\nseeds: [0]\n{arms}")
    (tmp_path / "results/demo").mkdir(parents=True)
    (tmp_path / "results/demo/table.md").write_text(
        "# demo: frozenlake · grpo\n\nCaption text.\n\n| arm | x |\n|---|---|\n| none | 1 |\n")
    (tmp_path / "results/demo/results.csv").write_text("arm,seed,wall_seconds\nnone,0,3600\n")


def test_the_block_opens_with_what_make_reproduce_costs(tmp_path):
    made_up_sweeps(tmp_path)
    cost = report.cost_section(tmp_path / "sweeps", tmp_path / "results")
    rows = [line for line in cost.splitlines() if line.startswith("| ") and not line.startswith("| sweep")]
    # demo: none seed 1 estimated at none's mean (1 h); beam has no cell run, so the rest is a lower bound
    assert rows == ["| demo | 1 of 3 | 1.0 | ≥ 1.0 | beam |", "| unrun | 0 of 1 | 0.0 | ≥ 0.0 | none |",
                    "| all | 1 of 4 | 1.0 | ≥ 1.0 | |"]
    assert report.render(tmp_path / "sweeps", tmp_path / "results").startswith(cost)


def test_render_and_update_on_a_made_up_sweep(tmp_path):
    made_up_sweeps(tmp_path)
    block = report.render(tmp_path / "sweeps", tmp_path / "results")
    block = block[block.index("#### demo"):]
    assert block.startswith("#### demo\n\nCaption text.\n\n| arm | x |\n|---|---|\n| none | 1 |\n")
    assert "#### unrun" not in block and "tsr compare experiments/sweeps/demo.yaml --arm ARM" in block
    readme = f"intro\n{report.BEGIN}\nold numbers\n{report.END}\noutro\n"
    updated = report.update(readme, block)
    assert updated.startswith(f"intro\n{report.BEGIN}\n\n#### demo") and updated.endswith(f"{report.END}\noutro\n")
    assert "old numbers" not in updated and report.update(updated, block) == updated
    with pytest.raises(ValueError, match="markers"):
        report.update("no markers here", block)
