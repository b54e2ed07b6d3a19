"""The pipeline file (`reprobuild.yaml`) turned into validated, expanded stages.

Everything here is checked at load time, before anything runs: unknown fields,
wrong types, unknown `${names}`, paths leaving the workspace. Each error names
the file, the line and the stage. `foreach` and `matrix` stages are expanded
into `name@item` stages here, so the rest of reprobuild only sees plain stages.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field

from . import codescan, templating, yamlio
from . import params as params_mod
from .errors import PipelineError
from .templating import Context, TemplateError
from .workspace import STATE_DIR, Workspace, cache_dir

TOP_FIELDS = {
    "params",
    "env",
    "vars",
    "sources",
    "stages",
    "cache",
    "remote",
    "executor",
    "link",
    "trusted_keys",
}
STAGE_FIELDS = {
    "desc",
    "cmd",
    "code",
    "deps",
    "params",
    "outs",
    "metrics",
    "env",
    "always_run",
    "frozen",
    "wdir",
    "resources",
    "plots",
}
EXPAND_FIELDS = {"foreach", "matrix", "do"}
ENV_FIELDS = {"python", "platform", "packages", "vars", "files", "requirements"}
OUT_FLAGS = {"cache", "persist"}
PLOT_FIELDS = {"x", "y", "title", "template"}
PLOT_TEMPLATES = ("line", "scatter", "bar", "confusion")
PLOT_DATA_SUFFIXES = (".json", ".csv", ".tsv", ".yaml", ".yml")
PLOT_IMAGE_SUFFIXES = (".png", ".svg")
LINK_MODES = ("copy", "hardlink", "symlink")
ALL_PACKAGES = ":all:"  # `packages: all` (packages.ALL)
_STAGE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@+=-]*$")


@dataclass(frozen=True)
class Out:
    path: str  # relative to the pipeline folder, posix, no trailing slash
    cache: bool = True
    persist: bool = False
    metric: bool = False
    line: int = 0


@dataclass(frozen=True)
class Dep:
    path: str  # relative to the pipeline folder, posix
    line: int = 0
    auto: bool = False  # found from the command, not listed


@dataclass(frozen=True)
class Source:
    """A tracked source: data no stage makes, its content kept in the cache (sources.py)."""

    path: str  # relative to the pipeline folder, posix, no trailing slash
    url: str | None = None  # imported from this fsspec URL (`reprobuild import`)
    line: int = 0


@dataclass(frozen=True)
class Plot:
    """An out (or a file inside an out folder) to draw; never part of the stage's key."""

    path: str  # relative to the pipeline folder, posix
    x: str | None = None
    y: str | None = None
    title: str | None = None
    template: str = "line"
    line: int = 0

    @property
    def image(self) -> bool:
        return self.path.lower().endswith(PLOT_IMAGE_SUFFIXES)


@dataclass(frozen=True)
class EnvSpec:
    python: bool = True
    platform: bool = True
    packages: tuple[str, ...] = ()  # each with its requirements; (":all:",) for `all`
    vars: tuple[str, ...] = ()
    files: tuple[str, ...] = ()  # relative to the pipeline folder
    requirements: str | None = None  # a lock file: the stage runs in a uv-built environment


@dataclass(frozen=True)
class Stage:
    name: str
    cmd: tuple[str, ...]  # expanded; each runs through `sh -c` in wdir
    wdir: str  # relative to the pipeline folder
    code: tuple[Dep, ...]
    deps: tuple[Dep, ...]
    outs: tuple[Out, ...]  # metrics included (metric=True)
    params: dict  # {recorded key: value}, sorted
    env: EnvSpec
    always_run: bool = False
    frozen: bool = False
    desc: str = ""
    cpus: int = 1
    line: int = 0
    plots: tuple[Plot, ...] = ()

    @property
    def cmd_text(self) -> str | list[str]:
        return self.cmd[0] if len(self.cmd) == 1 else list(self.cmd)


@dataclass(frozen=True)
class Pipeline:
    file: str  # as shown to the user
    stages: dict[str, Stage]  # in file order
    cache: str | None = None
    remote: str | None = None
    link: str = "copy"
    executor: dict = field(default_factory=dict)
    params_files: tuple[str, ...] = ()  # every params file read, relative to the pipeline folder
    trusted_keys: tuple[str, ...] = ()  # ed25519:<base64> keys whose signed run records count
    sources: tuple[Source, ...] = ()

    def source_of(self, path: str) -> Source | None:
        """The tracked source that is `path` or holds it."""
        for src in self.sources:
            if path == src.path or path.startswith(src.path + "/"):
                return src
        return None


def load(ws: Workspace, cache_opt: str | None = None, seen: Observed | None = None) -> Pipeline:
    """`cache_opt` is --cache-dir: outs may not touch the cache, wherever it is.
    `seen`, when given, collects what on disk the result depends on (plancache.py)."""
    display = ws.display(ws.pipeline_file)
    data = yamlio.load_file(ws.pipeline_file, display)
    return Loader(ws, display, cache_opt, seen).load(data)


@dataclass
class Observed:
    """What loading looked at besides the pipeline and params files: the plan cache's key."""

    code: set[str] = field(default_factory=set)  # absolute paths of code files read by codescan
    probes: dict[str, bool] = field(default_factory=dict)  # "isfile:P" / "exists:P" -> answer
    checked: set[str] = field(default_factory=set)  # absolute paths refused if via a symlink out
    outs: set[str] = field(default_factory=set)  # absolute out paths, refused if in the cache


class Loader:
    def __init__(
        self,
        ws: Workspace,
        display: str,
        cache_opt: str | None = None,
        seen: Observed | None = None,
    ):
        self.ws = ws
        self.seen = seen if seen is not None else Observed()
        self.cache_opt = cache_opt
        self.cache_root = str(ws.root / "cache")
        self.real_cache = os.path.realpath(self.cache_root)
        self.real_objects = os.path.join(self.real_cache, "objects")
        self.file = display
        self.root = str(ws.root)
        self.real_root = os.path.realpath(ws.root)
        self.base = str(ws.dir)
        self.base_from_root = os.path.relpath(self.base, self.root)
        self._folder_ok: dict[str, bool] = {}
        self._real_folders: dict[str, str] = {}  # folder -> its realpath (cache_clash)

    # -- errors -------------------------------------------------------------

    def error(self, msg, container=None, key=None, stage=None, line=None):
        if line is None and container is not None:
            line = (
                yamlio.line_of(container, key)
                if key is not None
                else getattr(container, "line", None)
            )
        return PipelineError(msg, file=self.file, line=line, stage=stage)

    def check_fields(self, mapping, allowed, what, stage=None):
        for key in mapping:
            if key not in allowed:
                raise self.error(
                    f"unknown field '{key}' in {what} (allowed: {', '.join(sorted(allowed))})",
                    mapping,
                    key,
                    stage,
                )

    # -- top level ----------------------------------------------------------

    def load(self, data) -> Pipeline:
        if data is None:
            data = yamlio.MDict()
        if not isinstance(data, dict):
            raise self.error("the pipeline file must be a mapping", line=1)
        self.check_fields(data, TOP_FIELDS, "the pipeline file")
        self.use_cache(data.get("cache") if isinstance(data.get("cache"), str) else None)

        files = self.params_files(data)
        self.params_files_data = params_mod.load_params(self.ws.dir, files, self.file)
        self.params_first = files[0] if files else params_mod.DEFAULT_PARAMS
        params_ns = params_mod.merged(self.params_files_data)
        vars_ = data.get("vars") or {}
        if not isinstance(vars_, dict):
            raise self.error("`vars` must be a mapping", data, "vars")
        self.ctx = Context(params=params_ns, vars=vars_)

        self.env = self.env_spec(data.get("env"), data, "env", EnvSpec(), None)
        stages_node = data.get("stages")
        if stages_node is None:
            stages_node = yamlio.MDict()
        if not isinstance(stages_node, dict):
            raise self.error("`stages` must be a mapping of stage names", data, "stages")
        stages: dict[str, Stage] = {}
        for name, body in stages_node.items():
            for stage in self.expand(str(name), body, stages_node):
                if stage.name in stages:
                    raise self.error("duplicate stage name", line=stage.line, stage=stage.name)
                stages[stage.name] = stage

        link = data.get("link", "copy")
        if link not in LINK_MODES:
            raise self.error(f"`link` must be one of {', '.join(LINK_MODES)}", data, "link")
        executor = data.get("executor") or {}
        if not isinstance(executor, dict):
            raise self.error("`executor` must be a mapping", data, "executor")
        for key in ("cache", "remote"):
            if key in data and not isinstance(data[key], str):
                raise self.error(f"`{key}` must be a string", data, key)
        return Pipeline(
            self.file,
            stages,
            data.get("cache"),
            data.get("remote"),
            link,
            dict(executor),
            tuple(self.params_files_data),
            sources=self.sources(data, stages),
            trusted_keys=self.trusted_keys(data),
        )

    def sources(self, data, stages: dict[str, Stage]) -> tuple[Source, ...]:
        """`sources: [PATH, {PATH: {url: URL}}, ...]`: no overlap with each other or any out."""
        value = data.get("sources")
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.error("`sources` must be a list of paths", data, "sources")
        found: list[Source] = []
        for i, entry in enumerate(value):
            url = None
            if isinstance(entry, dict) and len(entry) == 1:
                ((entry, opts),) = entry.items()
                if (
                    not isinstance(opts, dict)
                    or set(opts) != {"url"}
                    or not isinstance(opts["url"], str)
                ):
                    raise self.error("options of a source are {url: URL}", value, i)
                url = opts["url"]
            if not isinstance(entry, str) or not entry:
                raise self.error("each entry of `sources` must be a path", value, i)
            path = self.check_path(entry, ".", value, i, None)
            if path == ".":
                raise self.error("a source cannot be the pipeline's own folder", value, i)
            self.check_out_target(path, entry, value, i, None, what="source")
            line = yamlio.line_of(value, i)
            for other in found:
                if _overlap(path, other.path):
                    raise self.error(f"source '{path}' overlaps source '{other.path}'", line=line)
            for stage in stages.values():
                for out in stage.outs:
                    if _overlap(path, out.path):
                        raise self.error(
                            f"source '{path}' overlaps out '{out.path}' of stage "
                            f"'{stage.name}'; a path is either made by a stage or tracked",
                            line=line,
                        )
            found.append(Source(path, url, line))
        return tuple(found)

    def use_cache(self, configured: str | None) -> None:
        """Where the cache is (`cache:` as `configured`), for the checks of outs and links."""
        self.cache_root = str(cache_dir(self.ws, configured, self.cache_opt))
        self.real_cache = os.path.realpath(self.cache_root)
        # `link: symlink` outs are links into the cache's objects, wherever the cache is
        self.real_objects = os.path.join(self.real_cache, "objects")

    def trusted_keys(self, data) -> tuple[str, ...]:
        """`trusted_keys:` public keys, each `ed25519:<base64>` of 32 bytes (signature.py)."""
        from .signature import parse_public  # no cryptography needed to check the form

        value = data.get("trusted_keys")
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.error(
                "`trusted_keys` must be a list of ed25519:<base64> keys", data, "trusted_keys"
            )
        for i, key in enumerate(value):
            try:
                parse_public(key)
            except ValueError as exc:
                raise self.error(
                    f"trusted key '{str(key)[:60]}' is not valid: {exc}", value, i
                ) from None
        return tuple(dict.fromkeys(value))

    def params_files(self, data) -> list[str]:
        value = data.get("params")
        if value is None:
            return (
                [params_mod.DEFAULT_PARAMS]
                if self.isfile(self.ws.dir / params_mod.DEFAULT_PARAMS)
                else []
            )
        files = [value] if isinstance(value, str) else value
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise self.error("`params` must be a file name or a list of them", data, "params")
        for i, f in enumerate(files):
            self.check_path(f, ".", files, i, None)
        return list(files)

    # -- expansion ----------------------------------------------------------

    def expand(self, name: str, body, parent) -> list[Stage]:
        line = yamlio.line_of(parent, name)
        if not _STAGE_NAME.match(name) or "@" in name:
            raise self.error(
                "a stage name may hold letters, digits and _ . - only", line=line, stage=name
            )
        if not isinstance(body, dict):
            raise self.error("a stage must be a mapping", line=line, stage=name)
        if "foreach" not in body and "matrix" not in body:
            if "do" in body:
                raise self.error("`do` needs `foreach` or `matrix`", body, "do", name)
            return [self.stage(name, body, self.ctx, line)]
        self.check_fields(body, EXPAND_FIELDS, "a foreach/matrix stage", name)
        if "do" not in body or not isinstance(body["do"], dict):
            raise self.error("`foreach`/`matrix` needs a `do` mapping", body, None, name)
        if "foreach" in body and "matrix" in body:
            raise self.error("use `foreach` or `matrix`, not both", body, "matrix", name)
        items = []
        if "foreach" in body:
            seq = self.render_value(body["foreach"], self.ctx, body, "foreach", name)
            if isinstance(seq, (dict, list)) and not seq:
                raise self.error(
                    "`foreach` is empty: it would make no stages", body, "foreach", name
                )
            if isinstance(seq, dict):
                items = [(str(k), {"key": k, "item": v}) for k, v in seq.items()]
            elif isinstance(seq, list):
                for i, v in enumerate(seq):
                    items.append((_label(v, i), {"item": v}))
            else:
                raise self.error("`foreach` takes a list or a mapping", body, "foreach", name)
        else:
            matrix = self.render_value(body["matrix"], self.ctx, body, "matrix", name)
            if not isinstance(matrix, dict) or not all(
                isinstance(v, list) and v for v in matrix.values()
            ):
                raise self.error(
                    "`matrix` takes a mapping of non-empty lists", body, "matrix", name
                )
            keys = list(matrix)
            for combo in itertools.product(*(matrix[k] for k in keys)):
                local = dict(zip(keys, combo, strict=False))
                label = "-".join(_label(v, i) for i, v in enumerate(combo))
                items.append((label, {**local, "item": local}))
        stages = []
        for label, local in items:
            full = f"{name}@{label}"
            if not _STAGE_NAME.match(full):
                raise self.error(f"expanded stage name '{full}' is not valid", body, None, name)
            stages.append(
                self.stage(full, body["do"], self.ctx.child(local), yamlio.line_of(body, "do"))
            )
        return stages

    def render_value(self, value, ctx, container, key, stage):
        try:
            return templating.render_tree(value, ctx)
        except TemplateError as exc:
            raise self.error(str(exc), container, key, stage) from None

    # -- one stage ----------------------------------------------------------

    def stage(self, name: str, body, ctx: Context, line: int) -> Stage:
        self.check_fields(body, STAGE_FIELDS, "a stage", name)
        ctx = ctx.child({})
        ctx.used_params = set()
        raw_cmd = body.get("cmd")
        if raw_cmd is None:
            raise self.error("`cmd` is required", line=line, stage=name)
        cmd_list = [raw_cmd] if isinstance(raw_cmd, str) else raw_cmd
        if (
            not isinstance(cmd_list, list)
            or not cmd_list
            or not all(isinstance(c, str) for c in cmd_list)
        ):
            raise self.error("`cmd` must be a string or a list of strings", body, "cmd", name)
        try:
            cmds = tuple(templating.render_cmd(c, ctx) for c in cmd_list)
        except TemplateError as exc:
            raise self.error(str(exc), body, "cmd", name) from None

        wdir = body.get("wdir", ".")
        if not isinstance(wdir, str):
            raise self.error("`wdir` must be a string", body, "wdir", name)
        wdir = self.render_value(wdir, ctx, body, "wdir", name)
        wdir_rel = self.check_path(wdir, ".", body, "wdir", name)
        if not os.path.isdir(os.path.join(self.base, wdir_rel)):
            raise self.error(f"wdir '{wdir}' is not a folder", body, "wdir", name)

        deps = tuple(Dep(p, ln) for p, ln, _ in self.path_list(body, "deps", ctx, name, wdir_rel))
        code = [Dep(p, ln) for p, ln, _ in self.path_list(body, "code", ctx, name, wdir_rel)]
        outs = [
            Out(p, line=ln, **flags)
            for p, ln, flags in self.path_list(body, "outs", ctx, name, wdir_rel, True)
        ]
        outs += [
            Out(p, line=ln, metric=True, **flags)
            for p, ln, flags in self.path_list(body, "metrics", ctx, name, wdir_rel, True)
        ]
        code += self.scanned_code(
            cmds, wdir_rel, {c.path for c in code}, yamlio.line_of(body, "cmd")
        )

        param_values = self.stage_params(body, ctx, name)
        env = self.env_spec(body.get("env"), body, "env", self.env, name)
        flags = {}
        for key in ("always_run", "frozen"):
            value = body.get(key, False)
            if not isinstance(value, bool):
                raise self.error(f"`{key}` must be true or false", body, key, name)
            flags[key] = value
        desc = body.get("desc", "")
        if not isinstance(desc, str):
            raise self.error("`desc` must be a string", body, "desc", name)
        # `${key}` in a foreach's desc; its own set of used names, so a desc is never a param
        desc = str(
            self.render_value(desc, Context(ctx.local, ctx.params, ctx.vars), body, "desc", name)
        )
        plots = self.plots(body, ctx, name, wdir_rel, outs)
        return Stage(
            name=name,
            cmd=cmds,
            wdir=wdir_rel,
            code=tuple(code),
            deps=deps,
            outs=tuple(outs),
            params=param_values,
            env=env,
            desc=desc,
            cpus=self.cpus(body, name),
            line=line,
            plots=plots,
            **flags,
        )

    def plots(self, body, ctx, stage, wdir, outs) -> tuple[Plot, ...]:
        """`plots:` entries: PATH or {PATH: {x, y, title, template}}, each an out or inside one."""
        value = body.get("plots")
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.error("`plots` must be a list", body, "plots", stage)
        value = self.render_value(value, ctx, body, "plots", stage)
        found = []
        for i, entry in enumerate(value):
            opts = {}
            if isinstance(entry, dict) and len(entry) == 1:
                ((entry, opts),) = entry.items()
                opts = opts or {}
                if not isinstance(opts, dict):
                    raise self.error(
                        "options of a plot are {x, y, title, template}", value, i, stage
                    )
                self.check_fields(opts, PLOT_FIELDS, "a plot", stage)
                bad = [k for k, v in opts.items() if not isinstance(v, str)]
                if bad:
                    raise self.error(f"plot option `{bad[0]}` must be a string", value, i, stage)
            if not isinstance(entry, str) or not entry:
                raise self.error("each entry of `plots` must be a path", value, i, stage)
            path = self.check_path(entry, wdir, value, i, stage)
            template = opts.get("template", "line")
            if template not in PLOT_TEMPLATES:
                raise self.error(
                    f"plot '{entry}': unknown template '{template}' "
                    f"(allowed: {', '.join(PLOT_TEMPLATES)})",
                    value,
                    i,
                    stage,
                )
            lower = path.lower()
            if not lower.endswith(PLOT_DATA_SUFFIXES + PLOT_IMAGE_SUFFIXES):
                raise self.error(
                    f"plot '{entry}': not a data file (.json, .csv, .tsv, .yaml) "
                    "or an image (.png, .svg)",
                    value,
                    i,
                    stage,
                )
            if not any(path == o.path or path.startswith(o.path + "/") for o in outs):
                raise self.error(
                    f"plot '{entry}' is not an out of this stage, nor inside one",
                    value,
                    i,
                    stage,
                )
            found.append(Plot(path, line=yamlio.line_of(value, i), **opts))
        return tuple(found)

    def cpus(self, body, name) -> int:
        resources = body.get("resources") or {}
        if not isinstance(resources, dict) or set(resources) - {"cpus"}:
            raise self.error("`resources` takes {cpus: N}", body, "resources", name)
        cpus = resources.get("cpus", 1)
        if not isinstance(cpus, int) or isinstance(cpus, bool) or cpus < 1:
            raise self.error(
                "`resources.cpus` must be a whole number >= 1", body, "resources", name
            )
        return cpus

    def path_list(self, body, key, ctx, stage, wdir, allow_flags=False):
        """[(path relative to the pipeline folder, line, flags)] of a deps/outs-like list."""
        value = body.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(f"`{key}` must be a list", body, key, stage)
        value = self.render_value(value, ctx, body, key, stage)
        out = []
        for i, entry in enumerate(value):
            flags = {}
            if isinstance(entry, dict) and allow_flags and len(entry) == 1:
                ((path, opts),) = entry.items()
                opts = opts or {}
                if (
                    not isinstance(opts, dict)
                    or set(opts) - OUT_FLAGS
                    or not all(isinstance(v, bool) for v in opts.values())
                ):
                    raise self.error(
                        "options of an out are {cache: bool, persist: bool}", value, i, stage
                    )
                flags = dict(opts)
                entry = path
            if not isinstance(entry, str) or not entry:
                raise self.error(f"each entry of `{key}` must be a path", value, i, stage)
            path = self.check_path(entry, wdir, value, i, stage)
            if allow_flags:
                self.check_out_target(path, entry, value, i, stage)
            out.append((path, yamlio.line_of(value, i), flags))
        return out

    def check_out_target(
        self, path: str, raw: str, container, key, stage, what: str = "out"
    ) -> None:
        """Outs are deleted before a run: never the project itself or reprobuild's own files."""
        from_root = os.path.normpath(os.path.join(self.base_from_root, path))
        here = os.path.normpath(self.base_from_root)
        if from_root == "." or here == from_root or here.startswith(from_root + "/"):
            raise self.error(
                f"{what} '{raw}' would contain the pipeline's own folder", container, key, stage
            )
        full = os.path.normpath(os.path.join(self.base, path))
        self.seen.outs.add(full)
        cache = self.cache_clash(full)
        if cache is not None:
            raise self.error(
                f"{what} '{raw}' would delete or overwrite the cache ({self.ws.display(cache)})",
                container,
                key,
                stage,
            )
        parts = path.split("/")
        protected = {
            ".git",
            STATE_DIR,
            "reprobuild.yaml",
            "reprobuild.lock",
            os.path.relpath(self.ws.pipeline_file, self.base),
            os.path.relpath(self.ws.lock_file, self.base),
            *self.params_files_data,
        }
        if parts[0] in protected or ".git" in parts:
            raise self.error(
                f"{what} '{raw}' is one of reprobuild's or git's own files", container, key, stage
            )

    def check_path(self, raw: str, wdir: str, container, key, stage) -> str:
        """Normalise a path to posix, relative to the pipeline folder; refuse escapes."""
        if os.path.isabs(raw) or raw.startswith("~"):
            raise self.error(f"path '{raw}' must be relative", container, key, stage)
        if "\0" in raw:
            raise self.error("a path cannot hold a NUL character", container, key, stage)
        rel = os.path.normpath(os.path.join(wdir, raw))  # relative to the pipeline folder
        from_root = os.path.normpath(os.path.join(self.base_from_root, rel))
        if from_root == ".." or from_root.startswith("../") or os.path.isabs(from_root):
            raise self.error(
                f"path '{raw}' leaves the workspace ({self.root_display()})", container, key, stage
            )
        full = os.path.join(self.base, rel)
        self.seen.checked.add(full)
        if not self.inside_real_root(os.path.dirname(full), full):
            raise self.error(
                f"path '{raw}' leads out of the workspace through a symlink", container, key, stage
            )
        return rel.replace(os.sep, "/")

    def inside_real_root(self, folder: str, full: str, is_link: bool | None = None) -> bool:
        """Does the deepest existing part of `full` resolve inside the root? (memoised per
        folder; `is_link`: whether `full` is a symlink, when the caller knows)"""
        if os.path.islink(full) if is_link is None else is_link:
            return self._real_inside(os.path.realpath(full))
        if folder not in self._folder_ok:
            probe = folder
            while not os.path.lexists(probe) and len(probe) > len(self.root):
                probe = os.path.dirname(probe)
            self._folder_ok[folder] = self._real_inside(os.path.realpath(probe))
        return self._folder_ok[folder]

    def _real_inside(self, real: str) -> bool:
        return _within(real, self.real_root) or _within(real, self.real_objects)

    def cache_clash(self, full: str, is_link: bool | None = None) -> str | None:
        """The cache folder an out at `full` would delete or overwrite, if any."""
        if os.path.islink(full) if is_link is None else is_link:
            real = os.path.realpath(full)
            if _within(real, self.real_objects):
                real = full  # a `link: symlink` out: removing it removes the link, not the object
        else:  # its folder resolved once: a no-op of 1,000 outs spent 8,000 lstats here
            folder, name = os.path.split(full)
            if folder not in self._real_folders:
                self._real_folders[folder] = os.path.realpath(folder)
            real = os.path.join(self._real_folders[folder], name)
        for mine, cache in ((full, self.cache_root), (real, self.real_cache)):
            if _within(mine, cache) or _within(cache, mine):
                return cache
        return None

    def isfile(self, path) -> bool:
        found = self.seen.probes["isfile:" + str(path)] = os.path.isfile(path)
        return found

    def root_display(self) -> str:
        return self.ws.display(self.ws.root)

    def scanned_code(self, cmds, wdir, listed, line) -> list[Dep]:
        """Code inputs implied by `python FILE.py` / `python -m MOD` and their local imports."""
        wdir_abs = os.path.normpath(os.path.join(self.base, wdir))
        entries = []
        for cmd in cmds:
            for kind, target in codescan.scripts_in_cmd(cmd):
                if kind == "file":
                    path = os.path.normpath(os.path.join(wdir_abs, target))
                    if os.path.relpath(path, self.root).startswith(".."):
                        continue
                    entries.append(path)
                else:
                    entries.extend(
                        codescan.resolve_module(target, [wdir_abs, self.root], self.seen.probes)
                    )
        files = codescan.follow_imports(entries, [wdir_abs, self.root], self.root, self.seen.probes)
        self.seen.code.update(files)
        missing = []  # checked later against outs
        for p in entries:
            exists = self.seen.probes["exists:" + p] = os.path.exists(p)
            if not exists:
                missing.append(p)
        found = []
        for path in sorted(set(files) | set(missing)):
            rel = os.path.relpath(path, self.base).replace(os.sep, "/")
            if rel not in listed:
                found.append(Dep(rel, line, auto=True))
        return found

    def stage_params(self, body, ctx: Context, stage: str) -> dict:
        value = body.get("params") or []
        if not isinstance(value, list):
            raise self.error("`params` must be a list", body, "params", stage)
        value = self.render_value(value, ctx, body, "params", stage)
        wanted: list[tuple[str, str, int]] = []  # (file, key, line)
        for i, entry in enumerate(value):
            line = yamlio.line_of(value, i)
            if isinstance(entry, str):
                wanted.append(("", entry, line))
            elif isinstance(entry, dict):
                for fname, keys in entry.items():
                    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                        raise self.error(
                            f"params of '{fname}' must be a list of keys", value, i, stage
                        )
                    if fname not in self.params_files_data:
                        self.check_path(fname, ".", value, i, stage)
                        if not self.isfile(self.ws.dir / fname):
                            raise self.error(
                                f"params file '{fname}' does not exist", value, i, stage
                            )
                        extra = params_mod.load_params(self.ws.dir, [fname], self.file)
                        self.params_files_data.update(extra)
                    wanted.extend((fname, k, line) for k in keys)
            else:
                raise self.error("each param is a dotted key or {file: [keys]}", value, i, stage)
        wanted.extend(("", k, 0) for k in sorted(ctx.used_params))
        merged_ns = ctx.params
        values = {}
        for fname, key, line in wanted:
            if fname:  # that file's own value, even when a later file overrides it
                source = self.params_files_data[fname]
                prefix = "" if fname == self.params_first else f"{fname}:"
            else:
                source = merged_ns
                prefix = ""
            found = templating.dig(source, key)
            if found is templating._MISSING:
                where = fname or self.params_first
                raise self.error(
                    f"unknown param '{key}' (not in {where})", line=line or None, stage=stage
                )
            values.update(params_mod.flatten(prefix + key, found))
        return dict(sorted(values.items()))

    def env_spec(self, node, container, key, base: EnvSpec, stage) -> EnvSpec:
        if node is None:
            return base
        if not isinstance(node, dict):
            raise self.error("`env` must be a mapping", container, key, stage)
        self.check_fields(node, ENV_FIELDS, "env", stage)
        fields = {}
        for flag in ("python", "platform"):
            value = node.get(flag, getattr(base, flag))
            if not isinstance(value, bool):
                raise self.error(f"`env.{flag}` must be true or false", node, flag, stage)
            fields[flag] = value
        for name in ("packages", "vars", "files"):
            value = node.get(name, [])
            if name == "packages" and (value == "all" or ALL_PACKAGES in getattr(base, name)):
                fields[name] = (ALL_PACKAGES,)
                continue
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise self.error(f"`env.{name}` must be a list of names", node, name, stage)
            if name == "files":
                value = [self.check_path(v, ".", value, i, stage) for i, v in enumerate(value)]
            fields[name] = tuple(sorted(set(getattr(base, name)) | set(value)))
        fields["requirements"] = self.requirements(node, base.requirements, stage)
        return EnvSpec(**fields)

    def requirements(self, node, inherited: str | None, stage) -> str | None:
        """`requirements: FILE`: a pinned requirements file, or uv.lock / pyproject.toml
        (then both, side by side). Checked here so a typo fails before anything runs."""
        value = node.get("requirements", inherited)
        if value is None or value == inherited:
            return value
        if not isinstance(value, str) or not value:
            raise self.error("`env.requirements` must be a file name", node, "requirements", stage)
        path = self.check_path(value, ".", node, "requirements", stage)
        from .envs import lock_files

        for rel in lock_files(path):
            if not self.isfile(self.ws.dir / rel):
                raise self.error(
                    f"env.requirements: '{rel}' does not exist", node, "requirements", stage
                )
        return path


def _overlap(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(os.path.join(folder, ""))


def _label(value, index: int) -> str:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    return str(index)
