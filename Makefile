# Two commands set everything up on a fresh machine: `make plan` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STACK  ?= prod
# make image RUNTIME=gpu builds the variant GPU services run
RUNTIME ?= cpu

PLAN_DEPS := $(VENV)/.plan-deps
TEST_DEPS := $(VENV)/.test-deps
NATIVE    := inference_service/_letterbox.so

.PHONY: plan test lint serve regions clean image chromium docs golden mutants

plan: $(PLAN_DEPS)  ## evaluate the Pulumi program offline (mocks) and print what `pulumi up` would create
	$(BIN)/fleet plan --stack $(STACK)

regions: $(PLAN_DEPS)
	$(BIN)/fleet regions

# The suite runs in TEST_WORKERS processes (pytest-xdist), whole test files to each, so a file's servers and module
# fixtures start once: one more than the cores, since a part of the suite waits on servers, subprocesses and
# Chromium (on 2 cores: 3 workers 112 s, 2 workers 122 s, 4 workers 119 s). TEST_WORKERS=0 runs it in this process.
# pytest keeps its rewritten test modules as bytecode even where PYTHONDONTWRITEBYTECODE is set (as on our CI
# machines): otherwise every worker rewrites ~450 modules (the test plugins' too) at every run.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
test: chromium lint $(NATIVE)  ## lint, then the whole suite (pytest exit 5, "no tests", counts as a failure)
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# tests/server/test_browser.py drives Debian's Chromium. Checked first, so a machine without it learns at once: as root
# with apt-get it is installed; otherwise make stops with the one command to run (never a skipped test).
CHROMIUM ?= $(or $(shell command -v chromium),/usr/bin/chromium)
APT_GET  ?= $(if $(filter 0,$(shell id -u)),$(shell command -v apt-get))
chromium:
	@test -x "$(CHROMIUM)" || { \
	  if [ -n "$(APT_GET)" ]; then \
	    echo "Chromium is missing (tests/server/test_browser.py drives it): installing it with apt-get"; \
	    $(APT_GET) update -qq && DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq chromium >/dev/null && \
	    test -x "$(CHROMIUM)" || { echo "Chromium is still missing ($(CHROMIUM)) after apt-get" >&2; exit 2; }; \
	  else \
	    echo "make test: Chromium is missing ($(CHROMIUM)); tests/server/test_browser.py drives it. Install it, then" \
	      "run make test again:" >&2; \
	    echo "  sudo apt-get install -y chromium" >&2; exit 2; \
	  fi; }

# The server image with STACK's model files: docker buildx when an engine answers, else podman/buildah (and
# stand-in bases only where the real ones cannot be pulled); README "The server image".
image: $(PLAN_DEPS)
	$(BIN)/python -m fleet.build_image --stack $(STACK) --runtime $(RUNTIME)

# ruff, then mypy: strict for the packages pyproject.toml's [tool.mypy] lists.
lint: $(TEST_DEPS)
	$(BIN)/ruff check .
	$(BIN)/mypy

# Mutation testing (not part of `make test`): mutmut plants one bug at a time in the modules that decide behaviour
# and runs their in-process tests; score and survivors in benchmarks/results/mutants.json. Niced, one mutant at a
# time (the machine is shared), in scratch copies under $(MUTANTS_DIR). MODULES=components/layout.py picks modules.
MUTANTS_JOBS ?= 1
MUTANTS_DIR  ?= /var/tmp/yolo-fleet-mutants
MODULES      ?=
mutants: $(TEST_DEPS) $(NATIVE)
	YOLO_FLEET_MUTANTS_DIR=$(MUTANTS_DIR) nice -n 19 $(BIN)/python benchmarks/mutants.py --jobs $(MUTANTS_JOBS) \
	  $(if $(MODULES),--only $(MODULES))

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(PLAN_DEPS): $(BIN)/python requirements.txt pyproject.toml
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

# One resolver run over every file, so pins that meet (protobuf) are solved together.
$(TEST_DEPS): $(PLAN_DEPS) requirements-dev.txt requirements-ml.txt inference_service/requirements.txt
	$(BIN)/pip install -q -r requirements-dev.txt -r requirements-ml.txt
	touch $@

# The C letterbox kernel the server loads (the Dockerfile builds it the same way in its build stage).
$(NATIVE): inference_service/letterbox.c inference_service/jpeg_letterbox.c inference_service/native.py
	$(PYTHON) inference_service/native.py $@

clean:
	rm -rf $(VENV) $(SERVE_VENV) .pytest_cache .ruff_cache .mypy_cache $(NATIVE)

# `make serve` gets a venv of its own with only the server's runtime requirements (the image's, ~215 MB): no
# torch, ultralytics or Playwright (~7 GB), and it proves the server runs on exactly what the image installs.
# The server prints the address once it listens (--ready-message), so a failed start (busy port: exit 2)
# never shows a URL. Each port has its own key file (port 0, any free port, one per run), written only once the
# port is found free: a second `make serve`, on another port or failing on a busy one, never replaces the key of
# a server already running.
SERVE_VENV   := .venv-serve
SERVE_DEPS   := $(SERVE_VENV)/.serve-deps
SERVE_PYTHON ?= $(SERVE_VENV)/bin/python
SERVE_PORT   ?= 8080
SERVE_DIR    ?= .serve

# Binds as the server will (all IPv4 addresses, SO_REUSEADDR), so what would stop it stops make serve first;
# prints the port as a number (0080 is 80), which the recipe then uses.
define SERVE_PORT_CHECK
import errno, socket, sys
given = sys.argv[1]
if not (given.isascii() and given.isdigit()) or int(given) > 65535:
    sys.exit(print(f"make serve: SERVE_PORT={given} is not a port (0-65535; 0 picks a free one)", file=sys.stderr) or 2)
port = int(given)
if port:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("0.0.0.0", port))
    except OSError as error:
        hint = (f"stop what runs there, or pick another port: make serve SERVE_PORT={port + 1 if port < 65535 else 8080}"
                if error.errno == errno.EADDRINUSE else "pick a port from 1024 up: make serve SERVE_PORT=8080")
        sys.exit(print(f"make serve: cannot listen on port {port} ({error.strerror}): {hint}", file=sys.stderr) or 2)
print(port)
endef
export SERVE_PORT_CHECK

$(SERVE_DEPS): inference_service/requirements.txt
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install -q -r inference_service/requirements.txt
	touch $@

# The C letterbox kernel is optional here: without a compiler the server runs its numpy port (same answers).
serve: $(SERVE_DEPS)  ## run the inference server on the demo model with a fresh random key
	@$(MAKE) -s --no-print-directory $(NATIVE) || echo "NOTE: no C letterbox kernel; the server uses its numpy port" \
	  "(same answers, about 8 ms slower per camera image)" >&2
	@port=$$($(PYTHON) -c "$$SERVE_PORT_CHECK" "$(SERVE_PORT)") && \
	  mkdir -p $(SERVE_DIR) && keys=$(SERVE_DIR)/$$port && \
	  { [ "$$port" != 0 ] || keys=$$(mktemp -d $(SERVE_DIR)/0-XXXXXX); } && mkdir -p $$keys && \
	  key=$$($(PYTHON) -c "import secrets; print(secrets.token_urlsafe(24))") && \
	  $(PYTHON) -c "import hashlib,sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest())" "$$key" \
	    > $$keys/sha256.txt && \
	  echo "Starting the inference server on port $$port (demo model, key digest in $$keys/sha256.txt)" && \
	  READY_MESSAGE="$$(printf '%s\n' "Test page: {url}" "API key:   $$key" \
	    "Try:       curl -H 'Authorization: Bearer $$key' -F file=@models/samples/shapes-1.jpg {url}predict")" \
	  exec $(SERVE_PYTHON) -m inference_service --model models/demo-e2e.onnx --port $$port \
	    --api-key-file $$keys/sha256.txt

# Files generated from the code, committed and checked by the tests (each test's failure names its target):
# regions.schema.json and README's settings table from the pydantic models; tests/plans/<stack>.names.json, every
# physical name `fleet plan --json` gives, so a rename shows in review.
docs: $(PLAN_DEPS)
	$(BIN)/python -m fleet.docs

golden: $(TEST_DEPS)
	for stack in dev prod; do \
	  $(BIN)/python -m fleet.cli plan --stack $$stack --json | $(BIN)/python -m tests.plans.golden \
	    > tests/plans/$$stack.names.json.tmp && mv tests/plans/$$stack.names.json.tmp tests/plans/$$stack.names.json \
	    || { rm -f tests/plans/$$stack.names.json.tmp; exit 2; }; \
	done
