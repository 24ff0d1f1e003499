// Package chart tests the Helm chart in charts/kubelvs and the kustomize
// manifests in config/: helm lint, rendered objects with default and custom
// values, values.schema.json rejections, and parity with what is generated
// (CRD, RBAC from the +kubebuilder:rbac markers, dist/install.yaml, the
// sysctls of pkg/netif). It needs helm (and kubectl for the kustomize
// checks) from $KUBEBUILDER_ASSETS or ~/.cache/k8s-test-bins and skips
// without them, unless KUBELVS_REQUIRE_ENVTEST is set.
package chart
