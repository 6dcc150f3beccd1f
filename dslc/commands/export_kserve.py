"""dslc export-kserve: a Triton repository entry plus the KServe InferenceService that serves it on a cluster."""
from __future__ import annotations

import argparse

NAME = "export-kserve"
HELP = ("write MODEL as a Triton model repository entry and a KServe InferenceService manifest "
        "(kserve-tritonserver runtime, Open Inference Protocol v2) that serves the repository")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from dslc.commands import export_triton
    export_triton.add_arguments(p)
    p.add_argument("-o", "--output", metavar="FILE.yaml",
                   help="the manifest (default: NAME.isvc.yaml in the current directory)")
    p.add_argument("--storage-uri", metavar="URI",
                   help="where the cluster finds the repository: s3://, gs://, pvc://, https:// ... (default "
                        "pvc://dslc-models/<repository directory name>; copy the repository there)")
    p.add_argument("--isvc-name", metavar="NAME", help="InferenceService name (default: the model name, lower "
                                                        "case, '_' and '.' as '-')")
    p.add_argument("--namespace", metavar="NS", help="metadata.namespace (default: none, kubectl's current one)")
    p.add_argument("--min-replicas", type=int, default=1, metavar="N", help="minReplicas (default 1; 0 scales to zero)")
    p.add_argument("--max-replicas", type=int, default=None, metavar="N", help="maxReplicas (default: KServe's)")
    p.add_argument("--cpu", default="1", help="CPU request and limit per replica (default 1)")
    p.add_argument("--memory", default="2Gi", help="memory request and limit per replica (default 2Gi)")


def run(args) -> int:
    import sys
    from pathlib import Path

    import yaml

    from dslc.commands.export_triton import write_entry
    from dslc.serve import kserve
    from dslc.weights import atomic_write_bytes

    def usage(msg: str) -> int:
        print(f"dslc export-kserve: {msg}", file=sys.stderr)
        return 2

    name = args.name or Path(args.model).stem
    isvc = args.isvc_name or kserve.isvc_name(name)
    if isvc is None or not kserve.NAME_RE.match(isvc) or len(isvc) > kserve.MAX_NAME:
        return usage(f"{(args.isvc_name or name)!r} cannot be an InferenceService name (lower-case letters, digits "
                     f"and '-', starting with a letter, at most 63); give --isvc-name")
    repo_name = Path(args.repository).resolve().name or "models"
    storage = args.storage_uri or f"pvc://dslc-models/{repo_name}"
    if not storage.startswith(kserve.STORAGE_SCHEMES):
        return usage(f"--storage-uri {storage!r}: KServe downloads from {', '.join(kserve.STORAGE_SCHEMES)} URIs")
    if args.min_replicas < 0 or (args.max_replicas is not None and args.max_replicas < max(1, args.min_replicas)):
        return usage("--min-replicas must be >= 0 and --max-replicas >= max(1, --min-replicas)")
    written = write_entry(args, "export-kserve")
    if isinstance(written, int):
        return written
    _name, _cfg, cfg_path, model_path, _m = written
    manifest = kserve.inference_service(isvc, storage, gpu=args.gpu, namespace=args.namespace,
                                        min_replicas=args.min_replicas, max_replicas=args.max_replicas,
                                        cpu=args.cpu, memory=args.memory)
    problems = kserve.validate(manifest)
    if problems:   # the checks above should have caught each: a bug if not
        raise AssertionError("; ".join(problems))
    out = Path(args.output) if args.output else Path(f"{isvc}.isvc.yaml")
    text = ("# KServe InferenceService for the Triton repository " + str(Path(args.repository).resolve()) +
            f"\n# copy the repository to {storage}, then: kubectl apply -f {out.name}\n" +
            yaml.safe_dump(manifest, sort_keys=False))
    try:
        atomic_write_bytes(out, text.encode())
    except OSError as e:
        print(f"dslc export-kserve: error: cannot write {out}: {e.strerror or e}", file=sys.stderr)
        return 2
    for path in (cfg_path, model_path, out):
        print(f"wrote {path}")
    if not args.storage_uri:
        print(f"note: storageUri is {storage}: copy {args.repository} there, or pass --storage-uri "
              f"(s3://, gs://, pvc:// ...)")
    return 0
