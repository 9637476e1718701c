"""The report: files, figures, subspace numbers, and the page as a real browser renders it."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from conftest import cli_run
from olora.cli import main


@pytest.fixture(scope="module")
def two_runs(tiny_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("report_runs")
    runs = []
    for method in ("olora", "seqlora"):
        out = root / method
        cli_run(tiny_dirs["llama"], out, "train.max_steps=3", f"method={method}", tasks="[sentiment,newsdesk,helpline]")
        runs.append(out)
    return runs


def test_results_hold_subspace_diagnostics(two_runs):
    res = json.loads((two_runs[0] / "results.json").read_text())
    sub = res["subspace"]
    assert sub["tasks"] == ["sentiment", "newsdesk", "helpline"]
    for side in ("input", "output"):
        overlap, cosine = sub[side]["mean_overlap"], sub[side]["mean_max_principal_cosine"]
        # ‖A Aᵀ‖_F / ‖A‖²_F lies in [1/√r, 1]; a subspace shares every direction with itself.
        assert all(8**-0.5 - 1e-6 <= overlap[i][i] <= 1 + 1e-6 for i in range(3))
        assert all(abs(cosine[i][i] - 1.0) < 1e-6 for i in range(3))
        assert 0 <= overlap[0][1] < overlap[0][0] and 0 <= cosine[0][1] <= 1
        assert len(sub[side]["layers"]) == 4  # 2 layers x q_proj, v_proj
    assert "subspace" not in json.loads((two_runs[1] / "results.json").read_text())  # one shared adapter


@pytest.mark.slow
def test_report_of_one_and_several_runs(two_runs, tmp_path, capsys):
    assert main(["report", str(two_runs[0])]) == 0
    single = two_runs[0] / "report"
    assert {"heatmap.png", "curves.png", "losses.png", "subspace_input.png", "report.html", "report.md"} <= {
        p.name for p in single.iterdir()
    }
    assert main(["report", str(two_runs[0]), str(two_runs[1]), "-o", str(tmp_path / "cmp")]) == 0
    page = (tmp_path / "cmp" / "report.html").read_text()
    assert page.count("<img") >= 7 and "data:image/png;base64," in page and "seqlora" in page
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "| 2 | seqlora |" in md and "![" in md


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="no headless Chromium installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(two_runs, tmp_path):
    from olora.tools.report import build_report

    html_path, _ = build_report(two_runs, tmp_path / "page")
    shot = tmp_path / "shot.png"
    base = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1200,3000", html_path.as_uri()],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert shot.stat().st_size > 20_000  # a blank page is a few KB
    # Every image decodes: the DOM reports natural sizes > 0 for all of them.
    script = (
        "<script>onload=()=>{const i=[...document.images];document.title="
        "i.length+':'+i.filter(x=>x.naturalWidth>0).length}</script>"
    )
    probe = tmp_path / "probe.html"
    probe.write_text(html_path.read_text().replace("</body>", script + "</body>"))
    dom = subprocess.run(
        [*base, "--dump-dom", "--virtual-time-budget=5000", probe.as_uri()],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    title = dom.split("<title>")[1].split("</title>")[0]
    total, loaded = title.split(":")
    assert int(total) >= 7 and loaded == total


def test_tensorboard_logging(tiny_dirs, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    cli_run(tiny_dirs["llama"], out, "log.tensorboard=true")
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/newsdesk/orth", "train/sentiment/nll", "accuracy/sentiment", "accuracy/mean_seen"} <= set(tags)
    assert [e.step for e in events.Scalars("accuracy/sentiment")] == [0, 1]
