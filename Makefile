# The only commands a newcomer needs. `make test` sets everything up from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The AWS CLI of the virtualenv, run as a module: its `aws` script names the interpreter in a `#!` line, which breaks
# when the clone's path holds a space.
AWS_CLI := $(BIN)/python -m awscli
STAMP := $(VENV)/.installed

OUT ?= out
STAGE ?= prod
STACK ?= deutzia
TABLES ?=
DEMO ?= false
READS ?= true
WINDOW ?= 1
AUDITORS ?=
RESERVE ?= true
COMPACTION_MEMORY ?= 10240
# Region for the commands that need one; packaging itself calls no AWS API.
REGION ?= $(or $(AWS_DEFAULT_REGION),$(AWS_REGION),us-east-1)
PARAMETERS = AuditedTableNames=$(TABLES) CreateDemoTable=$(DEMO) AuditReads=$(READS) IngestBatchingWindowSeconds=$(WINDOW) \
	AuditorPrincipalArns=$(AUDITORS) ReserveConcurrency=$(RESERVE) CompactionMemorySize=$(COMPACTION_MEMORY)

.PHONY: test lint install wheelhouse clean package deploy infra-deploy chalice-stage run up demo sql replay compact reconcile faults bench

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

# The Lambda's own wheels (Linux x86_64, Python 3.11), fetched once, so `make package` then works offline.
WHEELHOUSE := $(VENV)/wheelhouse
WHEELS := $(WHEELHOUSE)/.complete
$(WHEELS): requirements.txt $(STAMP)
	rm -rf $(WHEELHOUSE)
	$(BIN)/pip download --quiet --only-binary=:all: --platform manylinux2014_x86_64 --python-version 3.11 \
		--implementation cp -r requirements.txt -d $(WHEELHOUSE)
	touch $(WHEELS)

install: $(STAMP)

wheelhouse: $(WHEELS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

# Speed, as ratios to baselines measured in the same run (see bench/run.py and bench/visible.py);
# `make bench ROWS=10000000` measures GET /audit over 10 M rows and 365 days. glibc keeps its heap between runs, so
# the figures measure work, not the first touch of memory freed back to the system after each run.
bench: $(STAMP)
	MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_TOP_PAD_=268435456 ROWS=$(ROWS) $(BIN)/python bench/run.py
	$(BIN)/python bench/visible.py

# The local stack (no AWS account): moto + the CloudTrail recorder on DEUTZIA_AWS_PORT (4566), the API on
# DEUTZIA_API_PORT (8000). `run` = set up from nothing + up + the demo; Ctrl-C stops it.
run: $(STAMP)
	$(BIN)/python -m deutzia_local run

up: $(STAMP)
	$(BIN)/python -m deutzia_local up

demo: $(STAMP)
	$(BIN)/python -m deutzia_local demo

# Replay, once, every batch ingest gave up on (the stack also does it every few seconds by itself).
replay: $(STAMP)
	@$(BIN)/python -m deutzia_local replay

# Compact the local audit records into key-sorted Parquet, once (the stack also does it every few seconds).
compact: $(STAMP)
	@$(BIN)/python -m deutzia_local compact

# Reconcile the local audit records with the trail's own files and backfill what is missing, once (the stack also
# does it every few seconds): DATE=YYYY-MM-DD for one day, else yesterday and today. Exits 1 when a call is missing.
reconcile: $(STAMP)
	@$(BIN)/python -m deutzia_local reconcile $(if $(DATE),--date '$(DATE)')

# The local stack under load and faults (S3 outage, poller killed, poison record), checked call by call.
faults: $(STAMP)
	$(BIN)/python -m deutzia_local.fault_suite $(FAULTS_ARGS)

# Q travels in single quotes with its own quotes escaped and `$` unexpanded, so any SQL text arrives as typed.
sql: $(STAMP)
	@$(BIN)/deutzia sql '$(subst ','\'',$(value Q))'

# The merged template: infra/template.yaml rendered, then merged into Chalice's SAM output. No AWS call. The wheels are
# found by their folder's file: URL (pip reads a space in PIP_FIND_LINKS as between two places: a clone's folder may
# hold one).
empty :=
WHEELHOUSE_URL = file://$(subst $(empty) $(empty),%20,$(abspath $(WHEELHOUSE)))
package: $(WHEELS)
	$(BIN)/python -m infra.render $(OUT)/templates
	AWS_DEFAULT_REGION=$(REGION) AWS_EC2_METADATA_DISABLED=true PIP_NO_INDEX=1 PIP_FIND_LINKS=$(WHEELHOUSE_URL) \
		$(BIN)/chalice package --stage $(STAGE) --merge-template $(OUT)/templates/merge-template.json $(OUT)/package
	@echo "merged template: $(OUT)/package/sam.json"

# Everything in one stack, with the AWS CLI: make deploy DEPLOY_BUCKET=<bucket for code> TABLES=Orders,Users
deploy: package
	@test -n "$(DEPLOY_BUCKET)" || { echo "set DEPLOY_BUCKET to an S3 bucket (in $(REGION)) for the code package" >&2; exit 2; }
	@test -n "$(TABLES)$(filter true,$(DEMO))" || { echo "set TABLES=<table,table> or DEMO=true" >&2; exit 2; }
	$(AWS_CLI) cloudformation package --region $(REGION) --template-file $(OUT)/package/sam.json \
		--s3-bucket $(DEPLOY_BUCKET) --output-template-file $(OUT)/package/packaged.yaml
	$(AWS_CLI) cloudformation deploy --region $(REGION) --template-file $(OUT)/package/packaged.yaml \
		--stack-name $(STACK) --capabilities CAPABILITY_NAMED_IAM CAPABILITY_AUTO_EXPAND \
		--parameter-overrides $(PARAMETERS)

# The `chalice deploy` path, step 1: the infrastructure alone (then see the README for `chalice deploy`).
infra-deploy: $(STAMP)
	@test -n "$(TABLES)$(filter true,$(DEMO))" || { echo "set TABLES=<table,table> or DEMO=true" >&2; exit 2; }
	$(BIN)/python -m infra.render $(OUT)/templates
	$(AWS_CLI) cloudformation deploy --region $(REGION) --template-file $(OUT)/templates/infrastructure.json \
		--stack-name $(STACK) --capabilities CAPABILITY_NAMED_IAM --parameter-overrides $(PARAMETERS)

# The `chalice deploy` path, step 2: a Chalice stage from the stack's outputs (then `chalice deploy --stage $(STAGE)`).
chalice-stage: $(STAMP)
	AWS_DEFAULT_REGION=$(REGION) $(BIN)/python -m infra.stage --stack $(STACK) --stage $(STAGE)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache out
