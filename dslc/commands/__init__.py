"""One module per `dslc` subcommand. Each keeps its top-level imports light (argparse only) so that
`dslc check` never pays for onnxruntime; heavy imports happen inside `run`."""
