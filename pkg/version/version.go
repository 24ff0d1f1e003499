// Package version holds the build version, set at link time:
//
//	go build -ldflags "-X github.com/kubelvs/kubelvs/pkg/version.Version=v0.1.0"
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is the release of this build; "dev" when not set by the linker.
var Version = "dev"

// String describes the build: version, VCS revision when known, Go version.
func String() string {
	rev := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				rev = " (" + s.Value[:12] + ")"
			}
		}
	}
	return fmt.Sprintf("kubelvs %s%s %s %s/%s", Version, rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
