"""Tests of the benchmark scripts' bookkeeping (no training): ``benchmarks/offline_crafter.py`` rebuilds its job
rows from a published results JSON, so a grid goes on from a fresh clone without running finished jobs again."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "offline_crafter.py"


@pytest.fixture(scope="module")
def offline_crafter() -> ModuleType:
    spec = importlib.util.spec_from_file_location("offline_crafter_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _summary(score: float, promise: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"score": score, "return": score / 2, "success": {"collect_wood": 10 * score}}
    if promise:
        out |= {"promise_gap": score / 3, "promised_return": score, "real_return_h": score / 4}
    return out


def _rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for seed in (0, 1):
        rows.append({"key": "pixels/50/1", "kind": "bc", "seed": seed, "wall_s": 10.0 + seed, "bc": _summary(1 + seed)})
        rows.append(
            {
                "key": "pixels/50/1",
                "kind": "wm",
                "seed": seed,
                "wall_s": 100.0 + seed,
                "wm_bc_rl": _summary(5 + seed, promise=True),
                "wm_bc_head": _summary(4 + seed, promise=True),
                **({"wm_bc": _summary(3 + seed)} if seed == 0 else {}),
            }
        )
        rows.append(
            {
                "key": "pixels/50/0.1",
                "kind": "wm_relabel",
                "seed": seed,
                "wall_s": 90.0 + seed,
                "wm_bc_rl_relabel": _summary(2.5 + seed, promise=True),
                "wm_bc_relabel": _summary(2 + seed),
            }
        )
        rows.append(
            {"key": "pixels/50/0.1", "kind": "bc_rw_relabel", "seed": seed, "wall_s": 7.0, "bc_rw_relabel": _summary(2)}
        )
    # (b) of seed 1 came from a later job on the finished model
    rows.append({"key": "pixels/50/1", "kind": "wm_feat", "seed": 1, "wall_s": 5.0, "wm_bc": _summary(3.5)})
    return rows


def test_rows_from_results_inverts_aggregate(offline_crafter: ModuleType) -> None:
    meta = {"record_s": {"pixels/50": 40.0}}
    result = json.loads(json.dumps(offline_crafter.aggregate(_rows(), meta)))  # as read back from the file
    rows = offline_crafter.rows_from_results(result)
    assert offline_crafter.aggregate(rows, meta) == result
    jobs = {(r["key"], r["kind"], r["seed"]) for r in rows}
    assert jobs == {(r["key"], r["kind"], r["seed"]) for r in _rows()}  # the same jobs count as done
    feat = next(r for r in rows if r["kind"] == "wm_feat")
    assert feat["wm_bc"]["score"] == 3.5 and feat["wall_s"] == 5.0
    wm1 = next(r for r in rows if r["kind"] == "wm" and r["seed"] == 1)
    assert "wm_bc" not in wm1 and wm1["wm_bc_rl"]["promise_gap"] == pytest.approx(6 / 3)


def test_merge_meta_keeps_both_sides_and_prefers_the_first(offline_crafter: ModuleType) -> None:
    published = {
        "record_s": {"pixels/200": 164.5, "pixels/50": 46.7},
        "idm": {"pixels-50-a0.1": {"idm/held_out_accuracy": 0.72}},
        "pixel_pipeline_200_minutes": 81.2,
    }
    here = {"record_s": {"pixels/50": 50.0, "pixels/1000": 900.0}, "idm": {}}
    merged = offline_crafter.merge_meta(published, here)
    assert merged["record_s"] == {"pixels/200": 164.5, "pixels/50": 46.7, "pixels/1000": 900.0}
    assert merged["idm"] == published["idm"]
    assert "sources" not in offline_crafter.merge_meta({}, {"sources": {"pixels": "t"}})  # --publish's own key
    assert "pixel_pipeline_200_minutes" not in merged  # recomputed from the rows it belongs to


def test_a_fresh_clone_goes_on_from_the_published_results(
    offline_crafter: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs, results = tmp_path / "runs", tmp_path / "results"
    results.mkdir()
    meta = {"record_s": {"pixels/50": 40.0}, "idm": {"pixels-50-a0.1": {"idm/held_out_accuracy": 0.7}}}
    published = json.loads(json.dumps(offline_crafter.aggregate(_rows(), meta)))
    (results / "offline_crafter_t.json").write_text(json.dumps(published))
    monkeypatch.setattr(offline_crafter, "ROOT", runs)
    monkeypatch.setattr(offline_crafter, "RESULTS", results)
    monkeypatch.setattr("sys.argv", ["offline_crafter.py", "--obs", "pixels", "--tag", "t", "--no-run"])
    offline_crafter.main()
    jobs = [json.loads(line) for line in (runs / "jobs_t.jsonl").read_text().splitlines()]
    assert len(jobs) == len(_rows())  # every published job counts as done
    assert json.loads((runs / "meta.json").read_text()) == meta  # kept for the invocations that record more
    assert json.loads((results / "offline_crafter_t.json").read_text()) == published  # rewritten unchanged
    assert (results / "offline_crafter_t.png").exists()


def test_the_canonical_published_file_is_not_taken_for_job_rows(
    offline_crafter: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    canonical = offline_crafter.aggregate(_rows(), {"sources": {"pixels": "t"}, "record_s": {}})
    (results / "offline_crafter.json").write_text(json.dumps(canonical))  # --publish renames methods
    monkeypatch.setattr(offline_crafter, "ROOT", tmp_path / "runs")
    monkeypatch.setattr(offline_crafter, "RESULTS", results)
    monkeypatch.setattr("sys.argv", ["offline_crafter.py", "--obs", "pixels", "--no-run"])
    offline_crafter.main()
    assert not (tmp_path / "runs" / "jobs.jsonl").exists()
