"""`plots show`, `plots diff` and `report` through the CLI on real git repositories; the pages
opened in headless Chromium with the network off."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import git

pytest.importorskip("altair")
pytest.importorskip("vl_convert")

PIPELINE = {
    "reprobuild.yaml": """\
        stages:
          evaluate:
            desc: Scores and curves
            cmd: sh evaluate.sh ${depth}
            code: [evaluate.sh]
            outs: [out/]
            metrics: [scores.json]
            plots:
              - out/curve.json: {x: recall, y: precision, title: PR curve}
              - out/loss.csv: {x: epoch, y: loss, template: scatter}
              - out/confusion.tsv: {x: actual, y: predicted, template: confusion}
              - scores.json: {x: stage, y: recall, template: bar}
              - out/logo.svg
        """,
    "params.yaml": "depth: 3\n",
    "evaluate.sh": """\
        mkdir -p out
        echo "{\\"points\\": [{\\"recall\\": 0.1, \\"precision\\": 0.9}, {\\"recall\\": 0.5, \\"precision\\": 0.$1}, {\\"recall\\": 1.0, \\"precision\\": 0.2}]}" > out/curve.json
        printf 'epoch,loss\\n1,0.9\\n2,0.5\\n3,0.%s\\n' "$1" > out/loss.csv
        printf 'actual\\tpredicted\\nyes\\tyes\\nyes\\tno\\nno\\tno\\nno\\tno\\n' > out/confusion.tsv
        echo "{\\"recall\\": 0.$1}" > scores.json
        echo '<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40"><circle cx="20" cy="20" r="15" fill="teal"/></svg>' > out/logo.svg
        """,
    ".gitignore": "out/\nscores.json\n",
}


@pytest.fixture
def pipe(ws):
    """Commit 1 (depth 3) built; outputs only in the cache, not in git."""
    ws.write(PIPELINE)
    assert ws.run("build").code == 0
    ws.commit_all("v1")
    return ws


def specs(page_html: str) -> dict:
    """{spec id: Vega-Lite spec} embedded in a page."""
    found = re.findall(
        r'<script type="application/json" id="(spec-\d+)">(.*?)</script>', page_html, re.S
    )
    return {name: json.loads(text.replace("<\\/", "</")) for name, text in found}


def values(spec: dict) -> list[dict]:
    if "data" in spec:
        return spec["data"]["values"]
    return [v for layer in spec.get("layer", []) for v in layer.get("data", {}).get("values", [])]


def revs_in(spec: dict) -> set[str]:
    return {v.get("rev") for v in values(spec)}


def test_show_writes_one_offline_page_and_a_picture_per_plot(pipe):
    r = pipe.run("plots", "show")
    assert r.code == 0, r.err
    folder = pipe.root / "reprobuild_plots"
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        ".gitignore",
        "01-pr-curve.svg",
        "02-out-loss-csv.svg",
        "03-out-confusion-tsv.svg",
        "04-scores-json.svg",
        "05-out-logo-svg.svg",
        "index.html",
    ]
    page = (folder / "index.html").read_text()
    assert not re.search(r'<(script|link|img)[^>]+(src|href)="https?:', page)  # nothing fetched
    assert "vegaEmbed" in page and len(page) > 500_000  # the JavaScript is inlined
    found = specs(page)
    assert len(found) == 4
    curve = found["spec-1"]
    assert [v["precision"] for v in values(curve)] == [0.9, 0.3, 0.2]
    assert curve["mark"]["type"] == "line" and curve["encoding"]["x"]["field"] == "recall"
    assert found["spec-2"]["mark"]["type"] == "point"
    assert {(v["actual"], v["predicted"], v["n"]) for v in values(found["spec-3"])} == {
        ("yes", "yes", 1),
        ("yes", "no", 1),
        ("no", "no", 2),
    }
    assert values(found["spec-4"])[0]["stage"] == "evaluate"
    assert "data:image/svg+xml;base64," in page
    svg = (folder / "01-pr-curve.svg").read_text()
    stamp, picture = svg.split("\n", 1)
    assert re.fullmatch(r"<!-- reprobuild plot [0-9a-f]{32} vl-convert \S+ -->", stamp)
    assert picture.startswith("<svg") and "PR curve" in picture
    assert git(pipe.root, "status", "--porcelain") == ""  # the folder ignores itself


def test_show_is_byte_identical_when_run_twice(pipe):
    pipe.run("plots", "show")
    folder = pipe.root / "reprobuild_plots"
    first = {p.name: p.read_bytes() for p in folder.iterdir()}
    pipe.run("plots", "show")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == first
    pipe.write({"params.yaml": "depth: 4\n"})  # new data: the kept picture is redrawn
    pipe.run("build")
    pipe.run("plots", "show")
    assert (folder / "01-pr-curve.svg").read_bytes() != first["01-pr-curve.svg"]
    assert (folder / "05-out-logo-svg.svg").read_bytes() == first["05-out-logo-svg.svg"]


def test_show_targets_and_unknown_target(pipe):
    r = pipe.run("plots", "show", "out/curve.json", "-o", "only")
    assert r.code == 0 and len(specs((pipe.root / "only/index.html").read_text())) == 1
    r = pipe.run("plots", "show", "out/", "-o", "folder")  # a folder: the plots inside it
    assert r.code == 0 and len(specs((pipe.root / "folder/index.html").read_text())) == 3
    r = pipe.run("plots", "show", "evaluate", "-o", "stage")
    assert r.code == 0 and len(specs((pipe.root / "stage/index.html").read_text())) == 4
    r = pipe.run("plots", "show", "nope.json")
    assert r.code == 2 and "'nope.json' is neither a declared plot nor a stage" in r.err


def test_diff_of_two_commits_overlays_both_read_from_the_cache(pipe):
    pipe.write({"params.yaml": "depth: 4\n"})
    assert pipe.run("build").code == 0
    pipe.commit_all("v2")
    r = pipe.run("plots", "diff", "HEAD~1", "HEAD", "-o", "d")
    assert r.code == 0 and r.err == ""
    page = (pipe.root / "d/index.html").read_text()
    curve = specs(page)["spec-1"]
    assert revs_in(curve) == {"HEAD~1", "HEAD"}
    by_rev = {v["rev"]: v["precision"] for v in values(curve) if v["recall"] == 0.5}
    assert by_rev == {"HEAD~1": 0.3, "HEAD": 0.4}
    assert {v["series"] for v in values(curve)} == {"HEAD~1", "HEAD"}
    assert page.count("data:image/svg+xml;base64,") == 2  # the image of each revision
    # default: HEAD against the workspace
    pipe.write({"params.yaml": "depth: 5\n"})
    pipe.run("build")
    assert pipe.run("plots", "diff").code == 0
    curve = specs(pipe.read("reprobuild_plots/index.html"))["spec-1"]
    assert revs_in(curve) == {"HEAD", "workspace"}


def make_experiment(ws, name: str, curve: dict) -> None:
    """A commit on HEAD holding a changed plot file, under refs/reprobuild/exps/NAME."""
    index = ws.root / ".git" / f"index-{name}"
    env = {**os.environ, "GIT_INDEX_FILE": str(index)}
    run = lambda *a, **kw: subprocess.run(  # noqa: E731
        ["git", *a], cwd=ws.root, check=True, capture_output=True, text=True, env=env, **kw
    )
    run("read-tree", "HEAD")
    blob = run("hash-object", "-w", "--stdin", input=json.dumps(curve)).stdout.strip()
    run("update-index", "--add", "--cacheinfo", f"100644,{blob},out/curve.json")
    tree = run("write-tree").stdout.strip()
    commit = subprocess.run(
        [
            "git",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit-tree",
            tree,
            "-p",
            "HEAD",
            "-m",
            name,
        ],
        cwd=ws.root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    git(ws.root, "update-ref", f"refs/reprobuild/exps/{name}", commit)


def test_diff_of_two_experiments_by_name(pipe):
    for name, p in (("exp-a", 0.61), ("exp-b", 0.72)):
        make_experiment(
            pipe, name, [{"recall": 0.5, "precision": p}, {"recall": 1.0, "precision": 0.1}]
        )
    r = pipe.run("plots", "diff", "exp-a", "exp-b", "--targets", "out/curve.json")
    assert r.code == 0, r.err
    curve = specs(pipe.read("reprobuild_plots/index.html"))["spec-1"]
    assert {(v["rev"], v["precision"]) for v in values(curve) if v["recall"] == 0.5} == {
        ("exp-a", 0.61),
        ("exp-b", 0.72),
    }


def test_a_broken_revision_is_a_note_and_the_rest_renders(pipe):
    git(pipe.root, "rm", "-q", "--cached", ".gitignore")
    pipe.write({".gitignore": "scores.json\n", "out/curve.json": "{not json"})
    pipe.commit_all("broken curve committed")
    r = pipe.run("plots", "diff", "HEAD~1", "HEAD", "no-such-rev", "-o", "b")
    assert r.code == 0
    assert "out/curve.json (HEAD): cannot parse: invalid JSON" in r.err
    assert "no-such-rev" in r.err and "unknown git revision" in r.err
    page = (pipe.root / "b/index.html").read_text()
    assert "cannot parse: invalid JSON" in page  # the note is on the page too
    found = specs(page)
    assert revs_in(found["spec-1"]) == {"HEAD~1"}  # the good revision still drawn
    assert revs_in(found["spec-2"]) == {"HEAD~1", "HEAD"}  # other plots of HEAD still drawn


def test_a_plot_missing_from_the_workspace_is_a_note(pipe):
    (pipe.root / "out" / "loss.csv").unlink()
    r = pipe.run("plots", "show")
    assert r.code == 0 and "out/loss.csv (workspace): missing from the workspace" in r.err
    assert len(specs(pipe.read("reprobuild_plots/index.html"))) == 3


def test_plots_are_not_part_of_the_key(pipe):
    text = pipe.read("reprobuild.yaml").replace("              - out/logo.svg\n", "")
    pipe.write({"reprobuild.yaml": text})
    r = pipe.run("status")
    assert r.code == 0 and "1 stage up to date" in r.out


def test_bad_plot_declarations_name_file_and_line(ws):
    ws.write(
        {
            "reprobuild.yaml": """\
                stages:
                  s:
                    cmd: echo > o.json
                    outs: [o.json]
                    plots:
                      - o.json: {template: pie}
                """
        }
    )
    r = ws.run("status")
    assert (
        r.code == 2
        and "reprobuild.yaml:6: stage 's': plot 'o.json': unknown template 'pie'" in r.err
    )
    ws.write(
        {
            "reprobuild.yaml": ws.read("reprobuild.yaml").replace(
                "o.json: {template: pie}", "other.json"
            )
        }
    )
    r = ws.run("status")
    assert r.code == 2 and "reprobuild.yaml:6: stage 's': plot 'other.json' is not an out" in r.err


def test_missing_extra_is_one_clear_line(pipe):
    code = (
        "import sys; sys.modules['altair'] = None\n"
        "from reprobuild.cli.main import main\n"
        "sys.exit(main(['plots', 'show']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=pipe.root, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: plots need altair and vl-convert-python (altair is missing) "
        "(pip install 'reprobuild[plots]')"
    ]


def test_report_documents_stages_metrics_stale_and_lineage(pipe):
    make_experiment(pipe, "exp-a", [{"recall": 0.5, "precision": 0.5}])
    pipe.write({"params.yaml": "depth: 4\n"})
    r = pipe.run("report", "-o", "r.html", "--lineage", "out/curve.json")
    assert r.code == 0, r.err
    page = pipe.read("r.html")
    assert "Scores and curves" in page and "sh evaluate.sh 4" in page
    assert "param changed: depth 3 -&gt; 4" in page  # what is stale and why
    assert "<th>workspace</th><th>HEAD</th><th>exp-a</th>" in page  # metrics table
    assert 'id="lineage"' in page and "Made by <b>evaluate</b>" in page
    assert len(specs(page)) == 4 and "<svg" in page


# -- in a real browser ----------------------------------------------------------------------


@pytest.mark.browser
def test_plots_diff_page_in_chromium_draws_one_line_per_revision(pipe, tmp_path):
    from tests.browser import open_page

    pipe.write({"params.yaml": "depth: 4\n"})
    pipe.run("build")
    assert pipe.run("plots", "diff").code == 0
    page = open_page(
        (pipe.root / "reprobuild_plots/index.html").as_uri(),
        tmp_path / "plots.png",
        "document.querySelectorAll('.vl-chart svg').length === 4",
    )
    try:
        assert page.console_errors == [] and page.exceptions == [] and page.requests == []
        assert page.evaluate("document.querySelectorAll('.vl-chart svg').length") == 4
        lines = page.evaluate(
            "document.querySelectorAll('#plot-1 svg .mark-line.role-mark path').length"
        )
        assert lines == 2  # HEAD and the workspace, overlaid
        assert (
            page.evaluate(
                "document.querySelectorAll('#plot-4 svg .mark-rect.role-mark path').length"
            )
            == 2
        )
        assert page.evaluate("document.querySelectorAll('#plot-5 img').length") == 2
    finally:
        page.close()
    assert (tmp_path / "plots.png").stat().st_size > 10_000


@pytest.mark.browser
def test_report_in_chromium_draws_the_dag_and_plots(pipe, tmp_path):
    from tests.browser import open_page

    assert pipe.run("report", "-o", "r.html").code == 0
    page = open_page(
        (pipe.root / "r.html").as_uri(),
        tmp_path / "report.png",
        "document.querySelectorAll('.vl-chart svg').length === 4",
    )
    try:
        assert page.console_errors == [] and page.exceptions == [] and page.requests == []
        assert page.evaluate("document.querySelectorAll('.dag svg').length") == 1
        assert page.evaluate("document.querySelector('.dag svg').textContent.includes('evaluate')")
        assert (
            page.evaluate(
                "document.querySelectorAll('#plot-1 svg .mark-line.role-mark path').length"
            )
            == 1
        )
    finally:
        page.close()
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_report_without_graphviz_draws_the_same_graph_itself(pipe, monkeypatch):
    from reprobuild import report

    pipe.write(
        {
            "reprobuild.yaml": pipe.read("reprobuild.yaml")
            + "  summary:\n    cmd: cat scores.json > summary.txt\n    deps: [scores.json]\n"
            "    outs: [summary.txt]\n"
        }
    )
    monkeypatch.setattr(report.shutil, "which", lambda name: None)
    assert pipe.run("report", "-o", "r.html").code == 0
    page = pipe.read("r.html")
    dag = page[page.index('<div class="dag">') : page.index("</svg>")]
    assert 'data-stage="evaluate" data-fate="skip"' in dag
    assert 'data-stage="summary" data-fate="run"' in dag  # stale stages marked
    assert dag.count('class="edge"') == 1
    assert "new stage" in dag  # the reasons, as the box's tooltip


def test_yaml_records_and_hostile_plot_files_are_notes(ws, tmp_path):
    outside = tmp_path / "secret.json"
    outside.write_text('[{"a": 1, "b": 2}]')
    ws.write(
        {
            "reprobuild.yaml": """\
                stages:
                  s:
                    cmd: sh make.sh
                    code: [make.sh]
                    outs: [o/]
                    plots:
                      - o/good.yaml: {x: a, y: b}
                      - o/tag.yaml: {x: a, y: b}
                      - o/bomb.yaml: {x: a, y: b}
                      - o/link.json: {x: a, y: b}
                      - o/nofield.json: {x: a, y: zz}
                """,
            "make.sh": """\
                mkdir -p o
                printf -- '- {a: 1, b: 2}\\n- {a: 2, b: 3}\\n' > o/good.yaml
                printf -- '- !!python/object/apply:os.system ["true"]\\n' > o/tag.yaml
                printf 'a: &a [x,x,x,x,x,x,x,x,x]\\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\\ng: [*f,*f,*f,*f,*f,*f,*f,*f,*f]\\n' > o/bomb.yaml
                echo '[{"a": 1}]' > o/nofield.json
                """,
        }
    )
    assert ws.run("build").code == 0
    # a link to outside is refused as an out by the build (test_hardening), so plant it after
    (ws.root / "o" / "link.json").symlink_to(outside)
    r = ws.run("plots", "show")  # a plot that is a link to outside: never read
    assert r.code == 2 and r.err == (
        "error: reprobuild.yaml:10: stage 's': path 'o/link.json' leads out of the workspace "
        "through a symlink\n"
    )
    kept = [line for line in ws.read("reprobuild.yaml").splitlines(True) if "link" not in line]
    ws.write({"reprobuild.yaml": "".join(kept)})
    r = ws.run("plots", "show")
    assert r.code == 0
    assert "o/tag.yaml (workspace): cannot parse:" in r.err
    assert "o/bomb.yaml (workspace): cannot parse:" in r.err
    assert "o/nofield.json (workspace): no field 'zz'" in r.err
    found = specs(ws.read("reprobuild_plots/index.html"))
    assert [(v["a"], v["b"]) for v in values(found["spec-1"])] == [(1, 2), (2, 3)]
    assert len(found) == 1


def test_a_revisions_metrics_leave_out_plain_outs_that_match_a_metrics_pattern(ws):
    ws.write(
        {
            "reprobuild.yaml": """\
                stages:
                  ev:
                    foreach: [a, b]
                    do:
                      cmd: sh ev.sh ${item}
                      code: [ev.sh]
                      outs: ['m/${item}.curve.json']
                      metrics: ['m/${item}.json']
                      plots: ['m/${item}.curve.json']
                """,
            "ev.sh": """\
                mkdir -p m
                echo '{"recall": 0.5}' > m/$1.json
                echo '[{"x": 1, "y": 2}]' > m/$1.curve.json
                """,
            ".gitignore": "m/\n",
        }
    )
    assert ws.run("build").code == 0
    ws.commit_all("v1")
    r = ws.run("metrics", "show", "--rev", "HEAD", "--json")
    assert sorted(json.loads(r.out)["metrics"]) == ["m/a.json", "m/b.json"]
    assert ws.run("report", "-o", "r.html").code == 0
    page = ws.read("r.html")
    metrics = page[page.index('<h2 id="metrics">') : page.index('<h2 id="plots">')]
    assert "m/a.json" in metrics and "curve" not in metrics
