"""Triton model repositories: config.pbtxt in protobuf text format, written and read back.

Layout (what Triton's onnxruntime backend loads):

    DIR/<name>/config.pbtxt
    DIR/<name>/<version>/model.onnx

`model_config()` builds the configuration as a dict shaped like Triton's JSON model configuration (the same dict
answers GET /v2/models/<name>/config); `to_pbtxt()` writes it as text format; `parse_pbtxt()` is a small parser
of protobuf text format (messages, scalars, lists, enums, strings, comments) that returns plain dicts, and
`normalize_config()` turns its output into the JSON shape (repeated fields as lists, parameters as a map).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from dslc.serve.protocol import FROM_TRITON_TYPE, TRITON_TYPE

PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"
DEFAULT_FILENAME = "model.onnx"

# ModelConfig fields that are `repeated` (so a single occurrence still means a list)
REPEATED = {"input", "output", "dims", "shape", "instance_group", "preferred_batch_size", "gpus", "versions",
            "profile", "model_warmup", "batch_input", "batch_output", "secondary_devices",
            "gpu_execution_accelerator", "cpu_execution_accelerator", "op_library_filename", "agents"}
MAPS = {"parameters", "cc_model_filenames", "metric_tags"}
ENUM_FIELDS = {"data_type", "kind", "format"}


class ConfigError(Exception):
    pass


# ----------------------------------------------------------------------------------------------- config dicts

def _dims(shape, batching: bool) -> tuple[list[int], list[int] | None]:
    """(dims, reshape) for a tensor: dims drop the batch dim when batching; Triton needs >= 1 dim, so a tensor
    that is a bare batch of scalars is written as dims [1] with reshape to []."""
    dims = [int(d) if int(d) >= 0 else -1 for d in (shape[1:] if batching else shape)]
    if not dims:
        return [1], []
    return dims, None


def model_config(name: str, inputs, outputs, max_batch_size: int, *, queue_delay_us: int = 0,
                 dynamic_batching: bool = True, instances: int = 1, gpu: bool = False,
                 default_model_filename: str | None = DEFAULT_FILENAME) -> dict:
    """Triton model configuration for an ONNX model; inputs/outputs are TensorSpec-like (name, datatype, shape)."""
    batching = max_batch_size > 0
    cfg: dict = {"name": name, "platform": PLATFORM, "max_batch_size": int(max_batch_size)}

    def tensor(t, is_input):
        dims, reshape = _dims(t.shape, batching)
        d = {"name": t.name, "data_type": TRITON_TYPE[t.datatype]}
        if is_input:
            d["format"] = "FORMAT_NONE"
        d["dims"] = dims
        if reshape is not None:
            d["reshape"] = {"shape": reshape}
        return d

    cfg["input"] = [tensor(t, True) for t in inputs]
    cfg["output"] = [tensor(t, False) for t in outputs]
    if batching and max_batch_size > 1 and dynamic_batching:
        cfg["dynamic_batching"] = {"max_queue_delay_microseconds": int(queue_delay_us)}
    cfg["instance_group"] = [{"count": int(instances), "kind": "KIND_GPU" if gpu else "KIND_CPU"}]
    if default_model_filename:
        cfg["default_model_filename"] = default_model_filename
    if gpu:
        # onnxruntime backend: cudnn_conv_algo_search 0 EXHAUSTIVE, 1 HEURISTIC, 2 DEFAULT
        cfg["parameters"] = {"cudnn_conv_algo_search": {"string_value": "1"}}
    return cfg


# ------------------------------------------------------------------------------------------ text format: write

def _quote(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _scalar(key: str, v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if key in ENUM_FIELDS:
        return str(v)
    return _quote(str(v))


def to_pbtxt(cfg: dict) -> str:
    lines: list[str] = []

    def emit(d: dict, ind: str):
        for key, v in d.items():
            if key in MAPS and isinstance(v, dict):
                for mk, mv in v.items():
                    lines.append(f"{ind}{key} {{")
                    lines.append(f"{ind}  key: {_quote(str(mk))}")
                    if isinstance(mv, dict):
                        lines.append(f"{ind}  value {{")
                        emit(mv, ind + "    ")
                        lines.append(f"{ind}  }}")
                    else:
                        lines.append(f"{ind}  value: {_scalar('', mv)}")
                    lines.append(f"{ind}}}")
            elif isinstance(v, dict):
                lines.append(f"{ind}{key} {{")
                emit(v, ind + "  ")
                lines.append(f"{ind}}}")
            elif isinstance(v, list):
                if v and all(isinstance(x, dict) for x in v):
                    lines.append(f"{ind}{key} [")
                    for j, x in enumerate(v):
                        lines.append(f"{ind}  {{")
                        emit(x, ind + "    ")
                        lines.append(f"{ind}  }}" + ("," if j < len(v) - 1 else ""))
                    lines.append(f"{ind}]")
                else:
                    items = ", ".join(_scalar(key, x) for x in v)
                    lines.append(f"{ind}{key}: [ {items} ]" if items else f"{ind}{key}: [ ]")
            else:
                lines.append(f"{ind}{key}: {_scalar(key, v)}")

    emit(cfg, "")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- text format: read

_TOKEN = re.compile(r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<word>[A-Za-z0-9_.+\-]+)
  | (?P<punct>[{}\[\]:,;<>])
""", re.VERBOSE)

_ESC = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "a": "\a", "b": "\b", "f": "\f",
        "v": "\v", "?": "?"}


def _unquote(tok: str) -> str:
    body = tok[1:-1]
    out = []
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        n = body[i + 1]
        if n in _ESC:
            out.append(_ESC[n])
            i += 2
        elif n in "01234567":
            m = re.match(r"[0-7]{1,3}", body[i + 1:])
            out.append(chr(int(m.group(0), 8)))
            i += 1 + len(m.group(0))
        elif n in "xX":
            m = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:])
            out.append(chr(int(m.group(0), 16)))
            i += 2 + len(m.group(0))
        else:
            raise ConfigError(f"unknown escape \\{n} in string {tok}")
    return "".join(out)


def _word_value(w: str):
    if w in ("true", "True"):
        return True
    if w in ("false", "False"):
        return False
    try:
        return int(w, 0) if not re.fullmatch(r"[+-]?0\d+", w) else int(w, 8)
    except ValueError:
        pass
    try:
        return float(w.rstrip("fF")) if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?[fF]?|[+-]?inf(inity)?|nan", w, re.I) else w
    except ValueError:
        return w


def parse_pbtxt(text: str) -> dict:
    """Parse protobuf text format into {field: [values...]} (every field a list; messages are dicts)."""
    toks: list[tuple[str, str, int]] = []
    pos = 0
    line = 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ConfigError(f"line {line}: unexpected character {text[pos]!r}")
        kind = m.lastgroup
        if kind != "ws":
            toks.append((kind, m.group(0), line))
        line += m.group(0).count("\n")
        pos = m.end()
    i = 0

    def peek():
        return toks[i] if i < len(toks) else ("eof", "", toks[-1][2] if toks else 1)

    def take(kind=None, value=None):
        nonlocal i
        t = peek()
        if (kind and t[0] != kind) or (value and t[1] != value):
            want = value or kind
            raise ConfigError(f"line {t[2]}: expected {want!r}, found {t[1] or 'end of file'!r}")
        i += 1
        return t

    def scalar():
        t = peek()
        if t[0] == "str":
            take()
            s = _unquote(t[1])
            while peek()[0] == "str":  # adjacent string literals concatenate
                s += _unquote(take()[1])
            return s
        if t[0] == "word":
            take()
            return _word_value(t[1])
        raise ConfigError(f"line {t[2]}: expected a value, found {t[1] or 'end of file'!r}")

    def message(close):
        out: dict = {}
        while True:
            t = peek()
            if close and t[1] == close:
                take()
                return out
            if t[0] == "eof":
                if close:
                    raise ConfigError(f"line {t[2]}: missing {close!r}")
                return out
            name = take("word")[1]
            vals = out.setdefault(name, [])
            colon = peek()[1] == ":"
            if colon:
                take()
            nt = peek()
            if nt[1] in ("{", "<"):
                take()
                vals.append(message("}" if nt[1] == "{" else ">"))
            elif nt[1] == "[":
                take()
                if peek()[1] != "]":
                    while True:
                        if peek()[1] in ("{", "<"):
                            o = take()[1]
                            vals.append(message("}" if o == "{" else ">"))
                        else:
                            vals.append(scalar())
                        if peek()[1] == ",":
                            take()
                            continue
                        break
                take("punct", "]")
            else:
                if not colon:
                    raise ConfigError(f"line {nt[2]}: expected ':' after {name!r}")
                vals.append(scalar())
            if peek()[1] in (",", ";"):
                take()

    return message(None)


def normalize_config(raw: dict) -> dict:
    """parse_pbtxt output -> JSON-shaped config: repeated fields as lists, maps as dicts, others scalar."""
    def norm(d: dict) -> dict:
        out = {}
        for k, vals in d.items():
            vals = [norm(v) if isinstance(v, dict) else v for v in vals]
            if k in MAPS:
                m = {}
                for entry in vals:
                    if not isinstance(entry, dict) or "key" not in entry:
                        raise ConfigError(f"'{k}' entries need a key")
                    m[entry["key"]] = entry.get("value")
                out[k] = m
            elif k in REPEATED:
                out[k] = vals
            else:
                out[k] = vals[-1] if vals else None
        return out
    return norm(raw)


def read_config(path) -> dict:
    text = Path(path).read_text(encoding="utf-8")
    try:
        return normalize_config(parse_pbtxt(text))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


# ----------------------------------------------------------------------------------------------- repositories

def write_model(repository, name: str, model_bytes: bytes, cfg: dict, version: int = 1) -> tuple[Path, Path]:
    """Write DIR/<name>/config.pbtxt and DIR/<name>/<version>/<default_model_filename> atomically."""
    mdir = Path(repository) / name
    vdir = mdir / str(version)
    vdir.mkdir(parents=True, exist_ok=True)
    model_path = vdir / cfg.get("default_model_filename", DEFAULT_FILENAME)
    cfg_path = mdir / "config.pbtxt"
    for path, data in ((model_path, model_bytes), (cfg_path, to_pbtxt(cfg).encode())):
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return cfg_path, model_path


def _version_dirs(mdir: Path, filename: str) -> list[tuple[int, Path]]:
    out = []
    for sub in mdir.iterdir():
        if sub.is_dir() and sub.name.isdigit() and (sub / filename).is_file():
            out.append((int(sub.name), sub / filename))
    return sorted(out)


def select_versions(cfg: dict, available: list[tuple[int, Path]]) -> list[tuple[int, Path]]:
    policy = cfg.get("version_policy") or {}
    if "all" in policy:
        return available
    if "specific" in policy:
        want = {int(v) for v in (policy["specific"] or {}).get("versions", [])}
        return [a for a in available if a[0] in want]
    n = int(((policy.get("latest") or {}).get("num_versions")) or 1)
    return available[-n:]


def model_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_model(mdir: Path, cfg: dict | None = None) -> dict:
    """{name, config, versions} for one model directory of a repository (ConfigError when it cannot serve);
    `cfg` in place of its config.pbtxt (a load request's configuration override)."""
    cfg_path = mdir / "config.pbtxt"
    if cfg is None:
        cfg = read_config(cfg_path) if cfg_path.is_file() else {}
    name = cfg.get("name") or mdir.name
    if name != mdir.name:
        raise ConfigError(f"{cfg_path}: name '{name}' does not match its directory '{mdir.name}'")
    platform, backend = cfg.get("platform"), cfg.get("backend")
    if (platform and platform != PLATFORM) or (backend and backend != BACKEND):
        raise ConfigError(f"{mdir.name}: platform '{platform or backend}' is not supported; dslc serve runs "
                          f"'{PLATFORM}' models only")
    filename = cfg.get("default_model_filename") or DEFAULT_FILENAME
    available = _version_dirs(mdir, filename)
    versions = select_versions(cfg, available)
    if not versions:
        raise ConfigError(f"{mdir}: no version directory holding {filename} "
                          f"(expected e.g. {mdir / '1' / filename})")
    return {"name": name, "config": cfg, "versions": versions}


def scan_repository(repository) -> list[dict]:
    """[{name, config (dict, {} when no config.pbtxt), versions: [(int, model path)]}] for each model directory."""
    root = Path(repository)
    if not root.is_dir():
        raise ConfigError(f"model repository {root} is not a directory")
    models = [scan_model(mdir) for mdir in model_dirs(root)]
    if not models:
        raise ConfigError(f"model repository {root} holds no model directories")
    return models


def check_config_against_model(cfg: dict, name: str, inputs, outputs, max_batch_size: int) -> None:
    """Raise ConfigError when config.pbtxt's inputs/outputs disagree with the ONNX model, as Triton would."""
    batching = max_batch_size > 0
    for key, specs in (("input", inputs), ("output", outputs)):
        by_name = {s.name: s for s in specs}
        for t in cfg.get(key) or []:
            tname = t.get("name")
            if tname not in by_name:
                raise ConfigError(f"model '{name}': config.pbtxt names {key} '{tname}', which the ONNX model does "
                                  f"not have (it has {', '.join(by_name)})")
            spec = by_name[tname]
            dt = FROM_TRITON_TYPE.get(str(t.get("data_type")))
            if dt is not None and dt != spec.datatype:
                raise ConfigError(f"model '{name}': {key} '{tname}' is {t.get('data_type')} in config.pbtxt but "
                                  f"{TRITON_TYPE[spec.datatype]} in the model")
            dims = [int(d) for d in t.get("dims") or []]
            reshape = t.get("reshape")
            model_dims = list(spec.shape[1:] if batching else spec.shape)
            if reshape is not None:
                continue
            if len(dims) != len(model_dims) or any(a != b and a != -1 and b != -1 for a, b in zip(dims, model_dims)):
                full = ([-1] if batching else []) + dims
                raise ConfigError(f"model '{name}': {key} '{tname}' has dims {dims} in config.pbtxt (full shape "
                                  f"{full} with max_batch_size {max_batch_size}) but the model declares "
                                  f"{list(spec.shape)}")

