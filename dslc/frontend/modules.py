"""Loading .net files and their imports: relative paths, the standard library (`import std.resnet`),
circular and missing imports, and the table of blocks each module can see."""
from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

from dslc.diagnostics import Diagnostics, UserError, did_you_mean
from dslc.frontend import ast as A
from dslc.frontend.parser import parse
from dslc.ops import registry


def std_dir() -> Path:
    from importlib.resources import files
    return Path(str(files("dslc.std")))


def std_modules() -> list[str]:
    return sorted(p.stem for p in std_dir().glob("*.net"))


@lru_cache(maxsize=1)
def std_block_index() -> dict[str, str]:
    """Block name -> the standard module defining it (std.resnet), for "add `import std.resnet`" hints."""
    out: dict[str, str] = {}
    for m in std_modules():
        text = (std_dir() / f"{m}.net").read_text()
        for name in re.findall(r"^[ \t]*block[ \t]+([A-Za-z_][A-Za-z0-9_]*)", text, re.M):
            out.setdefault(name, f"std.{m}")
    return out


def display_path(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if not rel.startswith(".." + os.sep + "..") else str(path)


class ModuleSet:
    def __init__(self, diags: Diagnostics):
        self.diags = diags
        self.by_path: dict[Path, A.Module | None] = {}
        self.tables: dict[int, dict[str, A.BlockDef]] = {}

    def load_root(self, path: Path, text: str | None = None, shown: str | None = None) -> A.Module | None:
        return self._load(Path(path).resolve(), text, shown or str(path), [])

    def _load(self, path: Path, text: str | None, shown: str, stack: list[Path]) -> A.Module | None:
        if path in self.by_path:
            return self.by_path[path]
        if text is None:
            text = self.read(path)
        text = text.removeprefix("\ufeff")  # a byte-order mark is no part of the program
        self.diags.sources[shown] = text
        module, errors = self.parse(path, text, shown)
        for d in errors:
            self.diags.add(d)
        self.by_path[path] = module
        if module is None:
            return None
        self._build_table(module, path, stack + [path])
        return module

    # The two hooks the language server overrides (dslc/lsp/analysis.py): unsaved editor buffers are read
    # instead of the files on disk, and the parse of an unchanged import is reused between edits.
    def read(self, path: Path) -> str:
        return path.read_text()

    def parse(self, path: Path, text: str, shown: str) -> tuple[A.Module | None, list]:
        """The module, or None and the syntax errors."""
        try:
            return parse(text, shown), []
        except UserError as e:
            return None, list(getattr(e, "diagnostics", [e.diagnostic]))

    def _resolve(self, imp: A.Import, importer: Path) -> Path:
        if imp.std:
            parts = imp.target.split(".")
            if parts[0] != "std" or len(parts) != 2:
                raise UserError(f"unknown module `{imp.target}`", imp.span,
                                f'standard modules are std.<name> ({", ".join("std." + m for m in std_modules())}); '
                                f'import files by quoted relative path: import "{"/".join(parts)}.net"')
            p = std_dir() / f"{parts[1]}.net"
            if not p.exists():
                raise UserError(f"no standard module `{imp.target}`", imp.span,
                                did_you_mean(imp.target, ["std." + m for m in std_modules()]) or
                                f"available: {', '.join('std.' + m for m in std_modules())}")
            return p.resolve()
        p = (importer.parent / imp.target).resolve()
        if not p.exists():
            raise UserError(f"cannot find imported file `{imp.target}`", imp.span,
                            f"imports are relative to the importing file: looked for {p}")
        if p.is_dir():
            raise UserError(f"`{imp.target}` is a directory, not a .net file", imp.span)
        if not p.is_file():   # a FIFO or device would block the read (or never end)
            raise UserError(f"`{imp.target}` is not a regular file", imp.span, "import a .net file")
        return p

    def _build_table(self, module: A.Module, path: Path, stack: list[Path]) -> None:
        table: dict[str, A.BlockDef] = {}
        origin: dict[str, A.Import] = {}
        for imp in module.imports:
            try:
                target = self._resolve(imp, path)
                if target in stack:
                    chain = " -> ".join(p.name for p in stack[stack.index(target):]) + f" -> {target.name}"
                    raise UserError(f"circular import: {chain}", imp.span, "move the shared blocks into a third file")
                try:
                    shown = display_path(target)
                    sub = self._load(target, None, shown, stack)
                except (OSError, UnicodeDecodeError) as e:
                    raise UserError(f"cannot read `{imp.target}`: {e}", imp.span) from None
            except UserError as e:
                self.diags.add(e.diagnostic)
                continue
            if sub is None:
                continue
            for name, block in self.tables.get(id(sub), {}).items():
                if name in table and table[name] is not block:
                    self.diags.error(f"block `{name}` is imported twice, from different files", imp.span,
                                     notes=[(origin[name].span, "first imported here")])
                    continue
                table[name] = block
                origin[name] = imp
        own: dict[str, A.BlockDef] = {}
        for b in module.blocks + module.networks:
            if b.name in own:
                self.diags.error(f"`{b.name}` is defined twice", b.span, "rename one of them",
                                 [(own[b.name].span, "first defined here")])
                continue
            if registry.get(b.name) is not None:
                self.diags.error(f"block `{b.name}` has the name of a built-in op", b.span, "rename the block")
                continue
            own[b.name] = b
            if b.kind == "block":
                table[b.name] = b
        self.tables[id(module)] = table

    def find_block(self, module: A.Module, name: str) -> A.BlockDef | None:
        return self.tables.get(id(module), {}).get(name)

    def visible_blocks(self, module: A.Module) -> set[str]:
        return set(self.tables.get(id(module), {}))
