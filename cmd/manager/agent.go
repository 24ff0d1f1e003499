package main

import (
	"fmt"
	"io"
)

// runAgent is the node agent. It is not built yet: say so plainly and fail,
// rather than start and program nothing.
func runAgent(_ []string, _ io.Writer) error {
	return fmt.Errorf("the agent role is not available in this build yet: it programs nothing; run \"manager controller\" for the controller role")
}
