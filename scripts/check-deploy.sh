#!/usr/bin/env bash
# Checks deploy/ with the real tools on the other side: the Prometheus
# scrape config and alert rules with promtool, the Alertmanager receiver
# example with amtool, the Kubernetes manifests with kubernetes-validate
# (strict: an unknown field is an error), and the Grafana dashboard's
# structure, metric names and PromQL (scripts/check_dashboard.py, promtool). Each checker is first shown a
# broken copy, which it must refuse, so a checker that accepts anything
# cannot pass this script. Needs scripts/setup-tools.sh first.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deploy="$root/deploy"
validate="$root/.venv/bin/kubernetes-validate"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

refuses() {
  local what="$1"; shift
  if "$@" >"$scratch/out" 2>&1; then
    echo "check-deploy: $what: a broken copy was accepted: $*" >&2
    cat "$scratch/out" >&2
    exit 1
  fi
}

# Broken copies: a rule with an unparsable expression, a route to a
# receiver that does not exist, a Deployment field misspelt.
sed 's/expr: /expr: sum by (/' "$deploy/prometheus/alerts.yml" >"$scratch/alerts.yml"
refuses "promtool check rules" promtool check rules "$scratch/alerts.yml"
sed 's/receiver: /receiver: missing-/' "$deploy/alertmanager/alertmanager.yml" >"$scratch/alertmanager.yml"
refuses "amtool check-config" amtool check-config "$scratch/alertmanager.yml"
sed 's/replicas:/replicaz:/' "$deploy/k8s/novacron.yaml" >"$scratch/novacron.yaml"
refuses "kubernetes-validate" "$validate" --strict --quiet "$scratch/novacron.yaml"

# The Grafana dashboard: its structure and metric names (no Grafana is in
# the registries), then its queries parsed by promtool as recording rules.
"$root/.venv/bin/python" "$root/scripts/check_dashboard.py" --self-test --rules "$scratch/dashboard-rules.yml"
promtool check rules "$scratch/dashboard-rules.yml"

promtool check config "$deploy/prometheus/prometheus.yml"
promtool check rules "$deploy/prometheus/alerts.yml"
amtool check-config "$deploy/alertmanager/alertmanager.yml"
"$validate" --strict --quiet "$deploy/k8s/novacron.yaml"
echo "check-deploy: deploy/prometheus, deploy/alertmanager, deploy/k8s and deploy/grafana pass"
