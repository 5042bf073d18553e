VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

.PHONY: test demo
test: $(VENV)/.installed
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q

demo: $(VENV)/.installed
	$(PY) -c "from focusnet.data import load_dataset; d = load_dataset('synth-lesion'); print(d.info.flag, {k: len(v) for k, v in d.splits.items()})"
