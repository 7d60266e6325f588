"""One module per host: how its pipelines call the DiT (steps, branches, experts, the
tensors in and out), where its block loops are, its defaults and published constants, and
``enable_cache(pipe, policy)`` plus one-line helpers per policy."""
