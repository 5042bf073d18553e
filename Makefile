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
	OMP_WAIT_POLICY=PASSIVE $(PY) -m focusnet demo
