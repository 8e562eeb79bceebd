# Two commands set up everything on a fresh machine:
#   make demo   install, index the shipped demo corpus, search it and answer a question
#   make test   install with test extras, run the test suite
PYTHON ?= python3
INDEX ?= indexes/demo
QUERY ?= what causes the northern lights
QUESTION ?= when did Alexander Fleming discover penicillin
# --threshold 0: answer whenever a span beats "no answer"; the shipped threshold (best F1 on SQuAD 2.0 dev, whose
# unanswerable questions have plausible answers) is strict and abstains on this one (README, "Reranking and answers")

.PHONY: install demo test bench

# torch first, pinned to the CPU wheel: an unpinned torch would pull several GB of CUDA packages.
# Where a torch is already installed (a GPU build, say) it is kept.
install:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -q -e '.[test]'

demo: install
	$(PYTHON) -m bertsearch index corpora/wiki-demo/docs.jsonl --index $(INDEX)
	$(PYTHON) -m bertsearch search "$(QUERY)" --index $(INDEX) -k 5
	$(PYTHON) -m bertsearch ask "$(QUESTION)" --index $(INDEX) --threshold 0

test: install
	$(PYTHON) -m pytest -q

bench: install
	$(PYTHON) -m bertsearch bench --corpus corpora/wiki-demo/docs.jsonl
