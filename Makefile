# Two entry points, each working from nothing: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN ?= runs/demo
MINUTES ?= 3

.PHONY: demo test install clean

demo: $(STAMP)
	$(BIN)/tinydiffusion data info
	$(BIN)/tinydiffusion train --out $(RUN) --minutes $(MINUTES)
	$(BIN)/tinydiffusion sample $(RUN)/model --sampler ddpm --out $(RUN)/ddpm.png --gif $(RUN)/ddpm.gif
	$(BIN)/tinydiffusion sample $(RUN)/model --sampler ddim --steps 50 --out $(RUN)/ddim50.png
	$(BIN)/tinydiffusion sample $(RUN)/model --sampler ddim --steps 25 --out $(RUN)/ddim25.png
	@echo "Everything of the demo is in $(RUN)/: model/ (exported), samples/ (grids during training),"
	@echo "metrics.csv, ddpm.png + ddpm.gif (500 steps), ddim50.png and ddim25.png (one row per class)."

test: $(STAMP)
	$(BIN)/python -m pytest

install: $(STAMP)

# torch first, pinned: it is the CPU build on these machines, and installing the package first
# would let pip pick a multi-GB CUDA build to satisfy its torch requirement.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,plot]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs .pytest_cache
