"""ONNX lowering: the checked IR graph -> one lean, validated ONNX model.

    from dslc.lowering.compile import compile_file, compile_graph
    model = compile_file("net.net")                        # onnx.ModelProto, validated
    model, info = compile_graph(program.graph, batch=1)    # from a graph; info traces values to .net lines

Modules: context (the `ctx` every op's `lower(ctx, node)` gets), model (assembly, metadata), passes (Identity /
reshape-chain removal, batchnorm folding, dead code), validate (checker, strict shape inference vs dslc's shapes,
onnxruntime session), serialize + save (weights written straight from numpy, external data past 2 GB),
dims (--batch), errors. Per-op lowerings live next to their registry entries in dslc/ops/<family>.py.
Nothing here is imported by `dslc check`.
"""
