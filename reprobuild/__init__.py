"""reprobuild: reproducible, cached builds for ML pipelines.

The public API is what `__all__` names; everything else may change.
"""

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "BuildOptions",
    "Project",
    "build",
    "plan",
    "checkout",
    "commit",
    "Reporter",
    "ReprobuildError",
]


def __getattr__(name):
    # Lazy: `import reprobuild` (and `reprobuild --help`) must stay light.
    if name in ("BuildOptions", "build", "plan", "checkout", "commit"):
        from . import engine

        return getattr(engine, name)
    if name == "Project":
        from .project import Project

        return Project
    if name == "Reporter":
        from .reporter import Reporter

        return Reporter
    if name == "ReprobuildError":
        from .errors import ReprobuildError

        return ReprobuildError
    raise AttributeError(name)
