"""The example step functions are called with whatever a workflow's inputs hold: the ones that build
a path from an input refuse a name that would leave ORCHESTRATOR_ARTIFACT_ROOT/docs."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import examples
from orchestrator.definition import build_plan, load_text
from orchestrator.errors import ValidationError
from orchestrator.runtime import operations
from orchestrator.runtime.engine import Engine, Recorder, Timing
from orchestrator.runtime.views import run_view
from orchestrator.store import Repository
from tests.unit.harness import drive

HOSTILE = ["../../../x", "../x", "a/b", "<absolute>", "..", ".", "x\n", "", "Search", "a.md", "a" * 101, "a\\b"]


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    artifacts = tmp_path / "deep" / "artifacts"
    artifacts.mkdir(parents=True)
    monkeypatch.setenv("ORCHESTRATOR_ARTIFACT_ROOT", str(artifacts))
    return artifacts


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def test_write_draft_writes_and_rewrites_the_features_document_under_the_root(root: Path) -> None:
    assert examples.write_draft("search") == {"path": "docs/search.md", "revision": 1}
    assert examples.write_draft("search", "shorter") == {"path": "docs/search.md", "revision": 2}
    assert (root / "docs" / "search.md").read_text() == "## Revision 1\nfirst draft\n## Revision 2\nshorter\n"


@pytest.mark.parametrize("feature", HOSTILE)
def test_write_draft_refuses_a_feature_that_is_not_a_plain_name_and_writes_nothing(root: Path, feature: str) -> None:
    feature = feature.replace("<absolute>", str(root.parent.parent / "abs"))
    with pytest.raises(ValidationError, match=r"feature .* is not a name: use \[a-z0-9_-\], at most 100 characters"):
        examples.write_draft(feature)
    assert files_under(root.parent.parent) == []


@pytest.mark.parametrize("feature", HOSTILE)
def test_publish_refuses_the_same_names(feature: str) -> None:
    with pytest.raises(ValidationError, match="is not a name"):
        examples.publish(feature, 1)


def test_a_step_given_a_hostile_feature_fails_once_and_is_not_retried(repo: Repository, root: Path) -> None:
    text = (
        "name: t\nsteps:\n  draft:\n    task: 'orchestrator.examples:write_draft'\n"
        "    with: {feature: '../../../x'}\n    retry: {max_attempts: 3, delay: 0s}\n"
    )
    engine = Engine.create(repo, Recorder(), timing=Timing(countdown_limit=60), renew_leases=False)
    run_id = operations.submit(engine, build_plan(load_text(text).workflow), {}).run_id
    drive(engine)
    step = run_view(repo, run_id)["steps"]["draft"]
    assert (step["status"], step["attempts"]) == ("failed", 1)
    assert step["error"] == (
        "ValidationError: feature '../../../x' is not a name: use [a-z0-9_-], at most 100 characters"
    )
    assert files_under(root) == [] and not (root.parent.parent / "x.md").exists()
