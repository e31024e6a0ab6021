"""infer: micro-batches of safe requests onto Triton, results out."""
