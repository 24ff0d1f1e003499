#!/usr/bin/env bash
# verify-generated.sh: regenerate deepcopy code, CRDs and RBAC into a scratch
# copy of the module and fail if anything differs from what is committed.
set -euo pipefail
cd "$(dirname "$0")/.."
gen=${CONTROLLER_GEN:-${K8S_TEST_BINS_DIR:-$HOME/.cache/k8s-test-bins}/controller-gen}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r go.mod go.sum api controllers pkg internal "$tmp/"
mkdir -p "$tmp/config/crd/bases" "$tmp/config/rbac/controller" "$tmp/config/rbac/agent"
(
	cd "$tmp"
	"$gen" object paths=./api/...
	"$gen" crd paths=./api/... output:crd:dir=config/crd/bases
	"$gen" rbac:roleName=kubelvs-controller paths=./controllers/... output:rbac:dir=config/rbac/controller
	"$gen" rbac:roleName=kubelvs-agent paths=./pkg/roles/... output:rbac:dir=config/rbac/agent
)
rc=0
diff -ru api "$tmp/api" || rc=1
diff -ru config/crd/bases "$tmp/config/crd/bases" || rc=1
for r in controller agent; do
	diff -u "config/rbac/$r/role.yaml" "$tmp/config/rbac/$r/role.yaml" || rc=1
done
if ((rc)); then
	echo "generated files are stale: run 'make generate manifests' and commit the result" >&2
fi
exit $rc
