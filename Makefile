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

# Rebuild the shipped initial model (engine/weights/mobile_public.*), two runs of `sa-engine train`
# with the committed recipe (~2.5 h on 2 cores): 4000 steps on 600 public scenes, shipped; then
# 6500 more from that file, with correction clicks on 3000 scenes, shipped over it (--continued
# keeps the first run's record inside the second's). If the second run stops, its two lines run
# again resume it (`sa-engine train` continues from runs/long/checkpoints/train.pt).
WEIGHTS_OVERRIDES := train.steps=4000 'train.decay_steps=[3200]' train.time_limit_s=3000 data.count=600
WEIGHTS_CONTINUED := run_dir=runs/long model.checkpoint=bundled:mobile_public data.count=3000 \
	train.num_iterations=3 train.steps=6500 'train.decay_steps=[5400]' train.time_limit_s=6600
weights: install
	rm -rf runs/train runs/long
	$(BIN)/sa-engine train $(WEIGHTS_OVERRIDES)
	$(BIN)/python -m engine.weights.ship runs/train mobile_public $(WEIGHTS_OVERRIDES)
	$(BIN)/sa-engine train $(WEIGHTS_CONTINUED)
	$(BIN)/python -m engine.weights.ship runs/long mobile_public --continued $(WEIGHTS_CONTINUED)
