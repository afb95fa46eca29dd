# Two entry points for a fresh machine with only Python 3.10+:
#   make demo  -> create .venv, install, run the default pipeline
#   make test  -> create .venv, install, run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint weights

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	# torch first, pinned: the CPU build on this disk; a looser spec would pull a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/sa-engine run

test: install
	$(BIN)/python -m pytest tests -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Rebuild the shipped initial model (engine/weights/mobile_public.*), four runs of `sa-engine train`
# with the committed recipe (~4 h on 2 cores): 4000 steps on 600 public scenes, shipped; 6500
# more from that file with 3 prompt iterations on 3000 scenes, shipped over it; 3000 more with 5
# iterations (2 correction clicks, 2 mask-only refinements), shipped over that; 700 more with the
# IoU head taught the best IoU with any mask holding a first click (train.iou_target=containing),
# shipped last (--continued keeps each replaced run's record inside the next one's). If a
# continued run stops, its two lines run again resume it (`sa-engine train` continues from its
# run_dir's checkpoints/train.pt).
WEIGHTS_OVERRIDES := train.steps=4000 'train.decay_steps=[3200]' train.time_limit_s=3000 data.count=600
WEIGHTS_CONTINUED := run_dir=runs/long model.checkpoint=bundled:mobile_public data.count=3000 \
	train.num_iterations=3 train.steps=6500 'train.decay_steps=[5400]' train.time_limit_s=6600
WEIGHTS_CLICKS := run_dir=runs/long3 model.checkpoint=bundled:mobile_public data.count=3000 \
	train.num_iterations=5 train.steps=3000 'train.decay_steps=[2500]' train.time_limit_s=4500
WEIGHTS_IOU := run_dir=runs/iou_containing train.iou_target=containing \
	model.checkpoint=bundled:mobile_public data.count=3000 train.num_iterations=5 train.steps=700 \
	train.lr=3e-4 'train.decay_steps=[550]' train.time_limit_s=1100
weights: install
	rm -rf runs/train runs/long runs/long3 runs/iou_containing
	$(BIN)/sa-engine train $(WEIGHTS_OVERRIDES)
	$(BIN)/python -m engine.weights.ship runs/train mobile_public $(WEIGHTS_OVERRIDES)
	$(BIN)/sa-engine train $(WEIGHTS_CONTINUED)
	$(BIN)/python -m engine.weights.ship runs/long mobile_public --continued $(WEIGHTS_CONTINUED)
	$(BIN)/sa-engine train $(WEIGHTS_CLICKS)
	$(BIN)/python -m engine.weights.ship runs/long3 mobile_public --continued $(WEIGHTS_CLICKS)
	$(BIN)/sa-engine train $(WEIGHTS_IOU)
	$(BIN)/python -m engine.weights.ship runs/iou_containing mobile_public --continued $(WEIGHTS_IOU)
