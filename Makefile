# Two commands set everything up on a fresh machine: `make plan` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STACK  ?= prod

PLAN_DEPS := $(VENV)/.plan-deps
TEST_DEPS := $(VENV)/.test-deps
NATIVE    := inference_service/_letterbox.so

.PHONY: plan test lint serve regions clean image

plan: $(PLAN_DEPS)  ## evaluate the Pulumi program offline (mocks) and print what `pulumi up` would create
	$(BIN)/fleet plan --stack $(STACK)

regions: $(PLAN_DEPS)
	$(BIN)/fleet regions

test: $(TEST_DEPS) $(NATIVE)  ## lint, then the whole suite (pytest exit 5, "no tests", counts as a failure)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# The server image with STACK's model files: docker buildx when an engine answers, else podman/buildah (and
# stand-in bases only where the real ones cannot be pulled); README "The server image".
image: $(PLAN_DEPS)
	$(BIN)/python -m fleet.build_image --stack $(STACK)

lint: $(TEST_DEPS)
	$(BIN)/ruff check .

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
$(NATIVE): inference_service/letterbox.c inference_service/native.py
	$(PYTHON) inference_service/native.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache $(NATIVE)

SERVE_PORT ?= 8080
serve: $(TEST_DEPS) $(NATIVE)  ## run the inference server on the demo model with a fresh random key
	@mkdir -p .serve && key=$$($(BIN)/python -c "import secrets; print(secrets.token_urlsafe(24))") && \
	  $(BIN)/python -c "import hashlib,sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest())" "$$key" > .serve/sha256.txt && \
	  echo "Test page: http://127.0.0.1:$(SERVE_PORT)/   API key: $$key" && \
	  echo "curl -H 'Authorization: Bearer $$key' -F file=@models/samples/shapes-1.jpg http://127.0.0.1:$(SERVE_PORT)/predict" && \
	  $(BIN)/python -m inference_service --model models/demo-e2e.onnx --port $(SERVE_PORT) --api-key-file .serve/sha256.txt
