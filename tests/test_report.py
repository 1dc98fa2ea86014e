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


def test_render_and_update_on_a_made_up_sweep(tmp_path):
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps/demo.yaml").write_text("base: x.yaml\n")
    (tmp_path / "sweeps/unrun.yaml").write_text("base: x.yaml\n")
    (tmp_path / "results/demo").mkdir(parents=True)
    (tmp_path / "results/demo/table.md").write_text(
        "# demo: frozenlake · grpo\n\nCaption text.\n\n| arm | x |\n|---|---|\n| none | 1 |\n")
    block = report.render(tmp_path / "sweeps", tmp_path / "results")
    assert block.startswith("#### demo\n\nCaption text.\n\n| arm | x |\n|---|---|\n| none | 1 |\n")
    assert "unrun" not in block and "tsr compare experiments/sweeps/demo.yaml --arm ARM" in block
    readme = f"intro\n{report.BEGIN}\nold numbers\n{report.END}\noutro\n"
    updated = report.update(readme, block)
    assert updated.startswith(f"intro\n{report.BEGIN}\n\n#### demo") and updated.endswith(f"{report.END}\noutro\n")
    assert "old numbers" not in updated and report.update(updated, block) == updated
    with pytest.raises(ValueError, match="markers"):
        report.update("no markers here", block)
