from reprobuild.codescan import follow_imports, scripts_in_cmd


def test_scripts_in_cmd():
    assert scripts_in_cmd("python stages/train.py --x 1") == [("file", "stages/train.py")]
    assert scripts_in_cmd("python3 -u -m pkg.mod arg") == [("module", "pkg.mod")]
    assert scripts_in_cmd("env A=1 python a.py && python3.11 b.py | cat") == [
        ("file", "a.py"),
        ("file", "b.py"),
    ]
    assert scripts_in_cmd("echo python a.py") == []
    assert scripts_in_cmd("cat a > b") == []
    assert scripts_in_cmd("python -X dev a.py") == [("file", "a.py")]


def test_follow_imports_local_only(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg/__init__.py").write_text("")
    (tmp_path / "pkg/util.py").write_text("from . import deep\n")
    (tmp_path / "pkg/deep.py").write_text("import json\n")
    (tmp_path / "helper.py").write_text("import os\n")
    (tmp_path / "main.py").write_text(
        "import os, sys\nimport helper\nfrom pkg.util import thing\n"
        "def f():\n    import json\ntry:\n    import yaml\nexcept ImportError:\n    pass\n"
    )
    files = follow_imports([str(tmp_path / "main.py")], [str(tmp_path)], str(tmp_path))
    rel = sorted(p[len(str(tmp_path)) + 1 :] for p in files)
    assert rel == ["helper.py", "main.py", "pkg/__init__.py", "pkg/deep.py", "pkg/util.py"]


def test_syntax_error_does_not_break_scan(tmp_path):
    (tmp_path / "bad.py").write_text("def (:\n")
    assert follow_imports([str(tmp_path / "bad.py")], [str(tmp_path)], str(tmp_path)) == [
        str(tmp_path / "bad.py")
    ]
