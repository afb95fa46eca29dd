"""SAM training with simulated interactive prompts, and interactive evaluation.

Modules, each usable alone: ``losses`` (focal/dice/IoU-MSE), ``prompts`` (simulated clicks and
boxes), ``schedule`` (lr function, param groups), ``data`` (training samples in the model's
input frame), ``step`` (one step's forward), ``loop`` (``train``), ``checkpoint``,
``evaluate`` (mIoU after k clicks, NoC). Nothing here imports Ray, Hydra or MLflow.
"""
