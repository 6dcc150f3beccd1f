"""Errors of the ONNX phase.

`LoweringError` is a dslc bug (a lowering that produced an invalid model, or a shape rule that disagrees
with ONNX's): the CLI reports it as an internal error naming the op and the .net location, exit code 3.
`WeightsMismatch` and `ProgramErrors` are the user's: a weights file that does not fit the network (exit 2)
and errors in the .net program (exit 1, diagnostics rendered).
"""
from __future__ import annotations


class LoweringError(Exception):
    """Internal error: the lowered model failed validation. Names the dslc node, its op and source location."""

    def __init__(self, message: str, node: str | None = None, op: str | None = None, span=None,
                 stage: str = "lowering"):
        self.message = message
        self.node = node
        self.op = op
        self.span = span
        self.stage = stage
        super().__init__(self.render())

    def render(self) -> str:
        where = f"{self.span}: " if self.span else ""
        what = ""
        if self.op or self.node:
            what = f" in op `{self.op}`" + (f" (node `{self.node}`)" if self.node else "")
        return f"{where}internal error{what} during ONNX {self.stage}: {self.message}"


class WeightsMismatch(Exception):
    """A weights file that does not fit the network: every problem listed."""

    def __init__(self, problems: list[str], source: str = "weights"):
        self.problems = list(problems)
        self.source = source
        shown = self.problems[:20]
        more = len(self.problems) - len(shown)
        lines = [f"{source} does not fit the network ({len(self.problems)} problem"
                 f"{'s' if len(self.problems) != 1 else ''}):"] + [f"  - {p}" for p in shown]
        if more:
            lines.append(f"  ... and {more} more")
        super().__init__("\n".join(lines))


class ProgramErrors(Exception):
    """The .net program has errors: `program.diagnostics.render_all()` says which."""

    def __init__(self, program):
        self.program = program
        super().__init__(program.diagnostics.render_all())


def user_error(e: BaseException, path) -> tuple[str, int, bool] | None:
    """How a command reports an exception from loading or compiling the .net file `path` (load_program,
    compile_graph): (message, exit code, plain), `plain` marking already rendered diagnostics; None for an
    exception that is not one of these (a bug elsewhere). Shared by `dslc compile`, `dslc run` and serving."""
    if isinstance(e, ProgramErrors):
        return e.program.diagnostics.render_all(), 1, True
    if isinstance(e, LoweringError):
        return f"{e}\nThis is a bug in dslc, not in your program: please report it with the .net file.", 3, False
    if isinstance(e, UnicodeDecodeError):    # a ValueError: before the catch-all below
        return f"{path} is not a UTF-8 text file", 2, False
    if isinstance(e, (FileNotFoundError, IsADirectoryError, PermissionError)):
        why = {FileNotFoundError: "no such file", IsADirectoryError: "it is a directory",
               PermissionError: "permission denied"}[type(e)]
        return f"cannot read {e.filename or path}: {why}", 2, False
    if isinstance(e, (WeightsMismatch, ValueError, OSError)):
        return str(e), 2, False
    return None


def report(e: BaseException, path, prefix: str = "dslc: error: ") -> int:
    """Print `user_error(e, path)` to stderr and return its exit code; re-raise any other exception."""
    import sys
    known = user_error(e, path)
    if known is None:
        raise e
    message, code, plain = known
    print(message if plain else prefix + message, file=sys.stderr)
    return code
