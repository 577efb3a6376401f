# dst: the two commands a user needs are `make demo` and `make test`; both set everything up first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.dst-installed
TOOLKITS := $(VENV)/.dst-toolkits
# the Jupyter kernel of this clone: one name per clone path, so a second clone never takes over the first one's kernel
KERNEL := dst-$(shell printf '%s' "$(CURDIR)" | cksum | cut -d' ' -f1)
TORCH ?= torch==2.13.0
export PYTHONUNBUFFERED := 1
export MPLBACKEND := Agg

.PHONY: setup demo test check-sync lint nbtest pytest lab docs readme export clean-nbs help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(STAMP): settings.ini setup.py
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --user --name $(KERNEL) --display-name "Python (dst: $(CURDIR))" >/dev/null
	@touch $(STAMP)

$(TOOLKITS): $(STAMP) settings.ini
	@$(PY) -m pip install -q -e ".[toolkits]" || echo "note: the optional toolkits extra (got10k, vot-toolkit) did not install; tests/test_toolkits.py will skip"
	@touch $(TOOLKITS)

setup: $(STAMP)  ## create .venv (torch pinned first), install dst editable with dev extras, register this clone's kernel

demo: $(STAMP)  ## the main job: `dst run all --scale smoke` on the synthetic benchmark, the paper rendered, the headline table
	$(BIN)/dst demo

test: $(STAMP) $(TOOLKITS) check-sync lint nbtest pytest  ## every check: notebooks/dst in sync and clean, ruff, notebooks, pytest (toolkits extra installed first)

check-sync: $(STAMP)  ## notebooks and dst/ in sync, notebooks clean, README from index.ipynb
	$(BIN)/dst dev check-sync

lint: $(STAMP)  ## ruff (ruff.toml): syntax errors, unused and undefined names, line length, over dst/ and tests/
	$(BIN)/ruff check dst tests

# The tests run processes side by side (two notebook workers, then two pytest workers). OpenMP threads that sleep
# while they wait (PASSIVE) share the cores; spinning ones (the default) slow two torch processes on two cores several
# times over. Alone, a process loses 0-12% by it (measured in nbs/40c_step_cost), so only the tests set it.
nbtest pytest: export OMP_WAIT_POLICY ?= PASSIVE
PYTEST_WORKERS ?= auto

nbtest: $(STAMP)  ## run every notebook's cells as tests (nbdev_test)
	cd nbs && ../$(BIN)/nbdev_test --path . --n_workers 2 --timing

pytest: $(STAMP)  ## the pytest suite in tests/, one file per worker at a time (pytest-xdist; PYTEST_WORKERS=0 runs it in one process)
	$(BIN)/pytest tests -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile

export: $(STAMP)  ## notebooks -> dst/, clean notebooks, README
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean && $(BIN)/dst dev readme

readme: $(STAMP)  ## README.md from nbs/index.ipynb (offline, no quarto)
	$(BIN)/dst dev readme

docs: $(STAMP)  ## offline HTML docs of every notebook into _site/ (nbdev_docs needs quarto; this does not)
	$(BIN)/dst dev docs --out _site

lab: $(STAMP)  ## JupyterLab with the project's kernel (explorers in nbs/explore/)
	@$(PY) -m ipykernel install --user --name $(KERNEL) --display-name "Python (dst: $(CURDIR))" >/dev/null
	@echo "this clone's kernel: $(KERNEL) (\"Python (dst: $(CURDIR))\")"
	$(BIN)/jupyter lab --notebook-dir=nbs $(if $(filter 0,$(shell id -u)),--allow-root,)
