"""onnxruntime sessions for dslc: see dslc.runtime.session (create_session, probe_providers, describe)."""
