# archop: everyday entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CACHE ?= /var/cache/archop
# One virtualenv per checkout (the project is installed editable into it), outside the repo.
VENV ?= $(CACHE)/venvs/$(notdir $(CURDIR))-$(shell printf %s "$(CURDIR)" | md5sum | cut -c1-8)
BIN := $(CACHE)/bin
export PATH := $(BIN):$(PATH)
export KUBECONFIG ?= $(CACHE)/kubeconfig
export HELM ?= $(BIN)/helm
export KUBECONFORM ?= $(BIN)/kubeconform
CLUSTER ?= archop
NAMESPACE ?= archop-system
VERSION ?= 0.1.0
OPERATOR_IMAGE ?= archop/operator:$(VERSION)
APP_IMAGE ?= archop/demoapp:$(VERSION)
# Offline (default): operands built from Debian packages. ARCHOP_ONLINE=1: the official upstream images.
ifeq ($(ARCHOP_ONLINE),1)
BASE_IMAGE ?= python:3.11-slim
POSTGRES_IMAGE ?= postgres:15.20-bookworm
REDIS_IMAGE ?= redis:7.0.15-bookworm
NGINX_IMAGE ?= nginx:1.27.5-bookworm
else
BASE_IMAGE ?= archop-offline/python:3.11-bookworm
POSTGRES_IMAGE ?= archop-offline/postgres:15
REDIS_IMAGE ?= archop-offline/redis:7
NGINX_IMAGE ?= archop-offline/nginx:1.22
endif
PYTEST := $(VENV)/bin/pytest

.PHONY: help deps venv lint chart-tools test cluster cluster-down cluster-smoke images install uninstall demo e2e \
        bench-failover bench-app sync-crds chart-readme

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

deps: ## Debian packages for the cluster and the local tests (idempotent)
	scripts/install-deps.sh

venv: $(VENV)/.installed ## the Python virtualenv (outside the repo) with the project and its dev tools
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

lint: venv ## ruff and mypy
	$(VENV)/bin/ruff check operator app testsupport bench e2e scripts
	$(VENV)/bin/mypy operator/archop app/demoapp
	$(VENV)/bin/mypy -p bench -p testsupport  # as packages: bench/app and bench/failover share module names

chart-tools: ## helm and kubeconform (cached), needed by the chart checks in make test
	e2e/cluster/build-tools.sh --chart-tools

test: deps venv lint chart-tools ## unit and local integration tests (real Postgres, Redis, nginx on loopback), chart checks
	$(PYTEST) -q operator/tests app/tests

cluster: deps ## build (cached) and start the offline kind cluster: 1 control plane + 3 workers
	e2e/cluster/cluster.sh up

cluster-down: ## delete the cluster
	e2e/cluster/cluster.sh down

cluster-smoke: ## prove the cluster works: scheduling, Services, DNS, PVCs, ingress, node loss
	e2e/cluster/smoke.sh

# The images we build are also tagged <tag>-<image id>: a rebuilt image gets a new name, so `make install`
# changes the pod template and Kubernetes rolls the pods (the same tag would keep the old containers).
image_id = $$(docker image inspect -f '{{.Id}}' $(1) | cut -c8-19)
content_tag = $(1)-$(call image_id,$(1))

images: ## build the operator and app images and load them, with the operand images, into the cluster
	docker build -q --target operator --build-arg BASE_IMAGE=$(BASE_IMAGE) -t $(OPERATOR_IMAGE) . >/dev/null
	docker build -q --target app --build-arg BASE_IMAGE=$(BASE_IMAGE) -t $(APP_IMAGE) . >/dev/null
	docker tag $(OPERATOR_IMAGE) $(call content_tag,$(OPERATOR_IMAGE))
	docker tag $(APP_IMAGE) $(call content_tag,$(APP_IMAGE))
	kind load docker-image --name $(CLUSTER) $(call content_tag,$(OPERATOR_IMAGE)) $(call content_tag,$(APP_IMAGE)) \
	  $(if $(filter 1,$(ARCHOP_ONLINE)),,$(POSTGRES_IMAGE) $(REDIS_IMAGE) $(NGINX_IMAGE))

# The kind cluster's control-plane node is both the API server's endpoint and where traefik runs on the host
# network: the NetworkPolicies admit it by address (docs/security.md, "Network policies").
install: ## helm install (or upgrade) the operator into $(NAMESPACE)
	cp_ip=$$(e2e/cluster/cluster.sh ingress-ip) && [ -n "$$cp_ip" ] && \
	$(HELM) upgrade --install archop charts/archop --namespace $(NAMESPACE) --create-namespace --wait --timeout 5m \
	  --set image.repository=$(firstword $(subst :, ,$(OPERATOR_IMAGE))) \
	  --set image.tag=$(VERSION)-$(call image_id,$(OPERATOR_IMAGE)) \
	  --set images.postgres=$(POSTGRES_IMAGE) --set images.redis=$(REDIS_IMAGE) \
	  --set images.nginx=$(NGINX_IMAGE) --set images.app=$(call content_tag,$(APP_IMAGE)) \
	  --set "networkPolicy.apiServer.cidrs={$$cp_ip/32}" \
	  --set "operandNetworkPolicies.ingressController.cidrs={$$cp_ip/32}"

uninstall: ## helm uninstall the operator (the CRD stays)
	$(HELM) uninstall archop --namespace $(NAMESPACE)

demo: cluster images install ## the main job: cluster, images, operator by Helm, sample Architecture Ready
	kubectl apply -f examples/minimal.yaml
	kubectl wait --for=condition=Ready architecture/shop --timeout=10m
	@kubectl get architecture shop
	@echo "App:   curl -H 'Host: $$(kubectl get arch shop -o jsonpath='{.spec.ingress.host}')' http://$$(e2e/cluster/cluster.sh ingress-ip)/healthz"
	@echo "Watch: kubectl get events --field-selector involvedObject.kind=Architecture -w"

e2e: venv cluster images install ## the cluster test suite (operator installed by Helm)
	E2E_INGRESS_URL=http://$$(e2e/cluster/cluster.sh ingress-ip) $(PYTEST) -q -p no:cacheprovider --durations=15 e2e/tests

bench-failover: venv ## failover benchmark on the cluster -> bench/results/failover.json
	$(VENV)/bin/python -m bench.failover

# BENCH_APP_ARGS="--compare tokens": plain reads vs reads with consistency tokens -> bench/results/app-tokens.json
bench-app: venv ## app throughput benchmark through the ingress -> bench/results/app.json
	E2E_INGRESS_URL=http://$$(e2e/cluster/cluster.sh ingress-ip) $(VENV)/bin/python -m bench.app $(BENCH_APP_ARGS)

sync-crds: ## copy crds/ into the chart (a test fails when they drift)
	scripts/sync-crds.sh

chart-readme: venv ## regenerate charts/archop/README.md from values.yaml (a test fails when it drifts)
	$(VENV)/bin/python scripts/chart_readme.py
