"""The model-agnostic runtime: a per-video session (the step clock every wrapped module
shares, and the record), whole-model and block-level wrappers that drive a policy, the
pipeline-level cache that starts each video, agreement across ranks, and the printed report."""
