# diffopt_ros: two commands on a fresh machine.
#   make demo   set up .venv and run the closed-loop demo (record -> learn -> relaunch)
#   make test   set up .venv, lint, and run the test suite
# Re-running is fast: .venv is rebuilt only when a requirements file or setup.py changes.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
REQS   := requirements/runtime.txt requirements/ros.txt requirements/test.txt setup.py setup.cfg

export ROS_LOG_DIR ?= $(CURDIR)/.venv/ros_log
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test lint bench colcon clean help

help:
	@echo "make demo   - set up and run the closed-loop demo (sim + SLAM + MPC + recorder, learn, relaunch)"
	@echo "make test   - set up, lint and run the tests"
	@echo "make bench  - run the benchmarks in bench/ (ratios against peers)"
	@echo "make colcon - colcon build the package into build/ install/ (ROS workspace style)"

setup: $(STAMP)

$(STAMP): $(REQS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/runtime.txt -r requirements/ros.txt -r requirements/test.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check diffopt_ros test bench launch docs setup.py

test: lint
	$(PY) -m pytest

demo: $(STAMP)
	$(VENV)/bin/diffopt-ros demo

bench: $(STAMP)
	$(PY) bench/sim.py
	$(PY) bench/mpc.py
	$(PY) bench/nlls.py
	$(PY) bench/lm_parts.py
	$(PY) bench/linearize_layout.py
	$(PY) bench/pgo_files.py
	$(PY) bench/slam.py
	$(PY) bench/slam_node_soak.py
	$(PY) bench/slam_updates.py
	$(PY) bench/slam_explore.py
	$(PY) bench/learn.py
	$(PY) bench/slam_weights.py
	$(PY) bench/control_loop.py
	$(PY) bench/navigation.py

colcon: $(STAMP)
	. $(VENV)/bin/activate && colcon build --base-paths . --build-base build --install-base install

clean:
	rm -rf build install log .pytest_cache .ruff_cache
