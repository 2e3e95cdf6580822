# Two entry points, each working from nothing: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN ?= runs/demo
MINUTES ?= 3

.PHONY: demo test install clean

demo: $(STAMP)
	@echo "== 1. The shipped sprite model, guidance alone: DDIM (25 steps) and DDPM (500 steps) from the same seeds, a GIF"
	$(BIN)/tinydiffusion sample sprites --sampler ddim --steps 25 --guidance 3 --guide none --out $(RUN)/shipped_ddim25.png
	$(BIN)/tinydiffusion sample sprites --sampler ddpm --guidance 3 --guide none --n 2 --out $(RUN)/shipped_ddpm500.png \
		--gif $(RUN)/shipped_ddpm500.gif
	$(BIN)/tinydiffusion sample sprites --sampler ddim --steps 25 --guidance 3 --guide none --n 2 \
		--out $(RUN)/shipped_ddim25_2.png
	@echo "== 2. The model card: DPM-Solver++ 10 steps, guidance 3 and its small guide beside it (40 network evaluations,"
	@echo "   20 of them the guide's), then the distilled student sprites-fast (4 evaluations, guidance folded in);"
	@echo "   compare the ms per image with DDPM-500's above"
	$(BIN)/tinydiffusion sample sprites --n 2 --out $(RUN)/shipped_dpmpp10.png
	$(BIN)/tinydiffusion sample sprites-fast --n 2 --out $(RUN)/shipped_fast4.png
	@echo "== 3. Prompts as a user types them, on the shipped text model (one row each); its card moves each prompt"
	@echo "   half-way to the nearest caption it was trained on (--snap 0.5), and says which"
	$(BIN)/tinydiffusion sample emoji --prompt "a slice of pizza" --prompt "a cute cat" --prompt "a red car" \
		--prompt "a happy smiling face" --n 4 --out $(RUN)/shipped_emoji_prompts.png
	$(BIN)/tinydiffusion sample emoji-fast --prompt "a cute cat" --prompt "a happy smiling face" --n 4 \
		--out $(RUN)/shipped_emoji_fast.png
	@echo "== 4. A short training run on the embedded sprites ($(MINUTES) minutes on this machine)"
	$(BIN)/tinydiffusion data info
	$(BIN)/tinydiffusion train --out $(RUN)/train --minutes $(MINUTES) --overwrite  # a rerun moves the last run aside, inside $(RUN)
	$(BIN)/tinydiffusion sample $(RUN)/train/model --sampler ddpm --out $(RUN)/train_ddpm500.png \
		--gif $(RUN)/train_ddpm500.gif
	$(BIN)/tinydiffusion sample $(RUN)/train/model --sampler ddim --steps 50 --out $(RUN)/train_ddim50.png
	$(BIN)/tinydiffusion sample $(RUN)/train/model --sampler ddim --steps 25 --out $(RUN)/train_ddim25.png
	@echo "Everything is in $(RUN)/: shipped_*.png/gif (the shipped models and a student), train/ (the run: model/, samples/,"
	@echo "metrics.csv), train_*.png/gif (its samples). Each grid has one row per class."
	@echo "To steer, watch and compare live in a browser: $(BIN)/tinydiffusion serve --runs runs  (then open http://127.0.0.1:8000)"

# The browser tests drive Debian's chromium (Playwright cannot download its own browsers here); install it
# when missing, and where apt is not usable (not root, not Debian) those tests skip with the reason.
test: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || (DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 || \
		echo "note: could not install chromium with apt-get; the browser tests will be skipped"
	$(BIN)/python -m pytest

install: $(STAMP)

# torch first, pinned: it is the CPU build on these machines, and installing the package first
# would let pip pick a multi-GB CUDA build to satisfy its torch requirement.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,plot,text,bench,serve,onnx]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs .pytest_cache
