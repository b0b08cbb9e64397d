"""kgserver's built-in link-prediction models: GNN encoders on DGL with 1-N decoders.

Each model module (``rgcn``, ``compgcn``, ``gatv2``) is an entry point of the
``kgserver.models`` group and registers itself with ``@register_model``, exactly
as a third-party plugin would. The modules share the decoders (``decoders``),
the encoder-decoder base with the depth controls (``common``), the graph helpers
(``graphs``) and one message-passing layer per file (``layers``). Nothing here
imports kgserver beyond the contract in ``kgserver.registry``.
"""
