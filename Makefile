# Two commands set up everything on a fresh machine:
#   make demo   install, index the shipped demo corpus, search it and answer a question
#   make test   install with test extras, run the test suite
# and, beside them: make docs (build the site, strict), make plots (redraw docs/img), make test-package
PYTHON ?= python3
INDEX ?= indexes/demo
QUERY ?= what causes the northern lights
QUESTION ?= when did Alexander Fleming discover penicillin

.PHONY: install demo test bench docs plots test-package

# torch first, pinned to the CPU wheel: an unpinned torch would pull several GB of CUDA packages.
# Where a torch is already installed (a GPU build, say) it is kept.
install:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -q -e '.[test,docs]'

demo: install
	$(PYTHON) -m bertsearch index corpora/wiki-demo/docs.jsonl --index $(INDEX)
	$(PYTHON) -m bertsearch search "$(QUERY)" --index $(INDEX) -k 5
	$(PYTHON) -m bertsearch ask "$(QUESTION)" --index $(INDEX)

test: install
	$(PYTHON) -m pytest -q

bench: install
	$(PYTHON) -m bertsearch bench --corpus corpora/wiki-demo/docs.jsonl

# the documentation site, as CI checks it (tests/test_docs.py): warnings are errors; the site goes to site/
docs: install
	$(PYTHON) -m mkdocs build --strict

# the plots in docs/img, from the figures in scripts/plots.py (commit the PNGs)
plots:
	$(PYTHON) -m pip install -q matplotlib
	$(PYTHON) scripts/plots.py

# build the sdist and wheel, install the wheel into a clean virtualenv, run the demo offline (tests/test_package.py)
test-package: install
	$(PYTHON) -m pip install -q build
	$(PYTHON) -m pytest -q -m slow tests/test_package.py
