import pytest

from reprobuild import pipeline
from reprobuild.errors import PipelineError
from reprobuild.workspace import Workspace


def load(tmp_path, text, params="", files=None):
    (tmp_path / "reprobuild.yaml").write_text(text)
    if params:
        (tmp_path / "params.yaml").write_text(params)
    for name, content in (files or {}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    return pipeline.load(Workspace(tmp_path / "reprobuild.yaml", tmp_path))


def test_params_sections_flatten_and_templated_params_are_tracked(tmp_path):
    p = load(
        tmp_path,
        """
stages:
  t:
    cmd: run --lr ${train.lr}
    params: [model, seed, {other.yaml: [k]}]
""",
        params="seed: 1\nmodel: {depth: 3, kind: {name: rf}}\ntrain: {lr: 0.1}\n",
        files={"other.yaml": "k: v\n"},
    )
    assert p.stages["t"].params == {
        "model.depth": 3,
        "model.kind.name": "rf",
        "other.yaml:k": "v",
        "seed": 1,
        "train.lr": 0.1,
    }


def test_foreach_items_and_names(tmp_path):
    p = load(
        tmp_path,
        """
vars: {models: [lr, rf]}
stages:
  train:
    foreach: ${models}
    do:
      cmd: fit ${item}
      outs: ['m/${item}.pkl']
  eval:
    foreach:
      - {name: a, k: 1}
      - {name: b, k: 2}
    do:
      cmd: ev ${item.name} ${item.k}
      outs: ['e/${item.name}']
""",
    )
    assert list(p.stages) == ["train@lr", "train@rf", "eval@0", "eval@1"]
    assert p.stages["eval@1"].cmd == ("ev b 2",)
    assert p.stages["train@rf"].outs[0].path == "m/rf.pkl"


def test_wdir_paths_relative_to_pipeline(tmp_path):
    p = load(
        tmp_path,
        "stages:\n  s:\n    wdir: sub\n    cmd: x\n    outs: [o.txt, ../top.txt]\n",
        files={"sub/.keep": ""},
    )
    assert [o.path for o in p.stages["s"].outs] == ["sub/o.txt", "top.txt"]


def test_out_flags_and_metrics(tmp_path):
    p = load(
        tmp_path,
        "stages:\n  s:\n    cmd: x\n    outs: [{big.bin: {cache: false, persist: true}}]\n    metrics: [m.json]\n",
    )
    big, m = p.stages["s"].outs
    assert (big.cache, big.persist, big.metric) == (False, True, False) and m.metric


def test_auto_code_inputs(tmp_path):
    p = load(
        tmp_path,
        "stages:\n  s:\n    cmd: python stages/a.py\n",
        files={"stages/a.py": "import helper\n", "stages/helper.py": ""},
    )
    assert [c.path for c in p.stages["s"].code] == ["stages/a.py", "stages/helper.py"]


def test_env_merges_stage_over_pipeline(tmp_path):
    p = load(
        tmp_path,
        "env: {packages: [numpy], vars: [A]}\nstages:\n  s:\n    cmd: x\n    env: {packages: [polars], python: false}\n",
    )
    env = p.stages["s"].env
    assert env.packages == ("numpy", "polars") and env.vars == ("A",) and env.python is False


@pytest.mark.parametrize(
    "body, msg",
    [
        ("stages:\n  s:\n    cmd: 1\n", "`cmd` must be a string"),
        ("stages:\n  s:\n    cmd: x\n    frozen: yes please\n", "`frozen` must be true or false"),
        ("stages:\n  s:\n    foreach: [a]\n", "needs a `do` mapping"),
        ("stages:\n  'bad name':\n    cmd: x\n", "a stage name may hold"),
        ("stages:\n  s:\n    cmd: x\n    env: {pakages: [x]}\n", "unknown field 'pakages' in env"),
        ("stages:\n  s:\n    cmd: x\n    outs: [{o: {cache: maybe}}]\n", "options of an out"),
    ],
)
def test_invalid(tmp_path, body, msg):
    with pytest.raises(PipelineError, match=msg):
        load(tmp_path, body)


def test_plots_are_validated_outs_and_a_foreach_desc_is_rendered(tmp_path):
    p = load(
        tmp_path,
        """
stages:
  ev:
    foreach: [a, b]
    do:
      desc: Scores of ${item} at depth ${depth}
      cmd: run ${item}
      outs: ['out/${item}/']
      metrics: ['m/${item}.json']
      plots:
        - out/${item}/curve.csv: {x: r, y: p, title: Curves}
        - 'm/${item}.json'
        - out/${item}/pic.png
""",
        params="depth: 3\n",
    )
    stage = p.stages["ev@b"]
    assert stage.desc == "Scores of b at depth 3"
    assert stage.params == {}  # a desc never makes a param (nor changes the key)
    assert [(q.path, q.x, q.y, q.title, q.template, q.image) for q in stage.plots] == [
        ("out/b/curve.csv", "r", "p", "Curves", "line", False),
        ("m/b.json", None, None, None, "line", False),
        ("out/b/pic.png", None, None, None, "line", True),
    ]


@pytest.mark.parametrize(
    "entry, msg",
    [
        ("o/x.json: {template: pie}", ":6: stage 's': plot 'o/x.json': unknown template 'pie'"),
        ("o/x.json: {colour: red}", ":6: stage 's': unknown field 'colour' in a plot"),
        ("o/x.json: {x: 3}", "plot option `x` must be a string"),
        ("other.json", ":6: stage 's': plot 'other.json' is not an out of this stage"),
        ("o/x.txt", "plot 'o/x.txt': not a data file"),
        ("../x.json", "leaves the workspace"),
    ],
)
def test_invalid_plots(tmp_path, entry, msg):
    text = f"stages:\n  s:\n    cmd: run\n    outs: [o/]\n    plots:\n      - {entry}\n"
    with pytest.raises(PipelineError) as err:
        load(tmp_path, text)
    assert msg in str(err.value)
