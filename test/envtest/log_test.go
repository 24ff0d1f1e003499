package envtest

import (
	"os"

	"github.com/go-logr/logr/funcr"
	ctrl "sigs.k8s.io/controller-runtime"
)

// KUBELVS_TEST_LOG=1 prints the roles' logs (controller-runtime's logger)
// to stderr, for a closer look at a failing test.
func init() {
	if os.Getenv("KUBELVS_TEST_LOG") != "" {
		ctrl.SetLogger(funcr.New(func(p, a string) { os.Stderr.WriteString(p + " " + a + "\n") }, funcr.Options{}))
	}
}
