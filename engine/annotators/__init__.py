"""Annotators: who labels the objects of stages 1 and 2 (simulated, imported COCO, people)."""
