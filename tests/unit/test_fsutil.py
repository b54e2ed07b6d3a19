"""fsutil.on_processes: forked workers for per-file work. Each check runs in a process of
its own: forking pytest's, whose other threads may hold a lock, could hang. And the
build's Trash."""

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from reprobuild import fsutil

ROOT = str(Path(__file__).resolve().parents[2])


def run(code: str) -> subprocess.CompletedProcess:
    script = f"import sys; sys.path.insert(0, {ROOT!r})\n" + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )


def test_results_come_back_whole_and_in_order_from_several_processes():
    r = run(
        """
        import os
        from reprobuild.fsutil import on_processes
        me = os.getpid()
        got = on_processes(lambda part: [(x * x, os.getpid()) for x in part], list(range(1000)), 3, "x")
        flat = [v for part in got for v in part]
        assert [v for v, _ in flat] == [x * x for x in range(1000)]
        assert len({pid for _, pid in flat} - {me}) == 3  # three children, the parent none
        assert on_processes(lambda part: part, [], 2, "x") == []
        print("ok")
        """
    )
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr


def test_an_error_in_a_child_is_raised_as_itself_and_stops_the_others():
    r = run(
        """
        import os, time
        from reprobuild.fsutil import on_processes
        from reprobuild.errors import CacheError

        class Odd(Exception):
            def __init__(self, a, b):  # pickles, but cannot be rebuilt from its args
                super().__init__(f"{a}/{b}")

        def raised(work, items, what="x"):
            try:
                on_processes(work, items, 2, what)
            except Exception as exc:
                return exc
            raise AssertionError("nothing raised")

        def missing(part):
            if 0 in part:
                raise FileNotFoundError(2, "gone", "a/b.txt")
            time.sleep(600)  # the others: killed, not waited for (else the run times out)

        def odd(part):
            raise Odd(1, 2)

        exc = raised(missing, list(range(16)))
        assert isinstance(exc, FileNotFoundError) and exc.filename == "a/b.txt", exc
        exc = raised(odd, [1, 2])
        assert type(exc) is CacheError and str(exc) == "1/2", exc
        exc = raised(lambda part: os.kill(os.getpid(), 9), [1, 2], "storing data")
        assert str(exc) == "storing data: a process doing it was killed", exc
        try:
            os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # every child was reaped
            print("ok")
        """
    )
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr


def test_trash_moves_aside_then_deletes_and_never_raises(tmp_path, monkeypatch):
    trash = fsutil.Trash(tmp_path / "trash")
    (tmp_path / "out.txt").write_text("old")
    (tmp_path / "outdir").mkdir()
    (tmp_path / "outdir/a.txt").write_text("a")
    trash.put(str(tmp_path / "out.txt"))
    trash.put(str(tmp_path / "outdir"))
    trash.put(str(tmp_path / "missing"))  # nothing there: nothing to do
    assert not (tmp_path / "out.txt").exists() and not (tmp_path / "outdir").exists()
    assert len(os.listdir(tmp_path / "trash")) == 2
    trash.empty()
    assert os.listdir(tmp_path / "trash") == []

    # a path a rename cannot move (another filesystem) is deleted at once
    (tmp_path / "far.txt").write_text("x")
    monkeypatch.setattr(fsutil.os, "rename", _raise(OSError(errno.EXDEV, "cross-device")))
    trash.put(str(tmp_path / "far.txt"))
    assert not (tmp_path / "far.txt").exists()
    monkeypatch.undo()

    # what cannot be deleted now stays for the next build, and fails nothing
    (tmp_path / "stuck").write_text("x")
    trash.put(str(tmp_path / "stuck"))
    monkeypatch.setattr(fsutil.os, "unlink", _raise(PermissionError(errno.EACCES, "no")))
    trash.empty(everything=True)
    monkeypatch.undo()
    assert len(os.listdir(tmp_path / "trash")) == 1
    trash.empty(everything=True)
    assert os.listdir(tmp_path / "trash") == []


def _raise(exc):
    def fail(*args, **kwargs):
        raise exc

    return fail


def test_a_symlinked_trash_is_never_followed(tmp_path):
    """A cloned repository could commit `.reprobuild/trash -> ../..`: outs are then deleted
    in place, and nothing the link leads to is touched."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "thesis.tex").write_text("years of work")
    state = tmp_path / "ws/.reprobuild"
    state.mkdir(parents=True)
    (state / "trash").symlink_to(outside)
    (tmp_path / "ws/out.txt").write_text("old")
    trash = fsutil.Trash(state / "trash")
    trash.empty(everything=True)
    trash.put(str(tmp_path / "ws/out.txt"))
    trash.empty(everything=True)
    assert not (tmp_path / "ws/out.txt").exists()
    assert (outside / "thesis.tex").read_text() == "years of work"
    assert os.listdir(outside) == ["thesis.tex"]
