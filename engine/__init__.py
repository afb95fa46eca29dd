"""sa-engine core: everything that is true without Ray or Hydra.

Model and predictor, mask maths, automatic mask generation, SA-1B records, data sources,
dataset writer/reader/index, training, evaluation, annotators, audit and tracking.
Nothing here imports ``workers`` or ``stages``.
"""

__version__ = "0.1.0"
