package bench

import (
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
)

// ipvsadmRestore programs the rule set with one `ipvsadm -R`, the rule set
// on its stdin: the kernel tool's bulk path.
func ipvsadmRestore(svcs []ipvs.Service) (time.Duration, error) {
	cmd := exec.Command("ipvsadm", "-R")
	cmd.Stdin = strings.NewReader(kerneltest.IPVSAdmRules(svcs, false))
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start)
	if err != nil {
		return d, fmt.Errorf("ipvsadm -R: %v: %s", err, out)
	}
	return d, nil
}
