"""Item text → vectors with pre-trained text models, as a cached Ray Data job.

Entry points (imported from their modules, so `raylrec --help` does not pay for torch and Ray):
`registry.resolve_model` / `registry.load_text_model`, `encoder.TextEncoder`, `encode.encode_items`,
`artifacts.load_item_embeddings`.
"""
