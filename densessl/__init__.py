"""densessl: dense self-supervised visual pre-training on one pipeline.

The flow of the package follows the flow of the data: ``data`` (image sources) ->
``views`` (crops with exact geometry) -> ``augment`` (batched photometric ops) ->
``methods`` (backbone, heads, loss) -> ``training`` (trainer, checkpoints) -> ``export`` / ``eval``.
"""

__version__ = "0.1.0"
