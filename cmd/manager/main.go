// Command manager is the one kubelvs binary. Its subcommands are the roles:
//
//	manager controller   cluster-wide validation, status and Events (leader-elected)
//	manager agent        programs this node's kernel (DaemonSet)
//	manager version      prints the build version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/kubelvs/kubelvs/pkg/roles"
	"github.com/kubelvs/kubelvs/pkg/version"
)

const usage = `Usage: manager <command> [flags]

Commands:
  controller   run the cluster controller (validation across objects, status, Events)
  agent        run the node agent (programs IPVS, ipsets, VIPs and netfilter on this node)
  dump         print the IPVS virtual and real servers kubelvs programmed on this node, and its VIPs
  cleanup      remove every kernel object kubelvs made on this node (after uninstalling)
  version      print the build version

Run "manager <command> -h" for the flags of a command.
`

// errUsage marks errors caused by how the command was called (exit code 2).
var errUsage = errors.New("usage")

func main() {
	os.Exit(run(ctrl.SetupSignalHandler(), os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "controller":
		err = runController(ctx, args[1:], stderr)
	case "agent":
		err = runAgent(ctx, args[1:], stderr)
	case "dump":
		err = roles.Dump(ctx, stdout)
	case "cleanup":
		if len(args) > 1 {
			err = fmt.Errorf("%w: cleanup takes no arguments", errUsage)
			break
		}
		err = roles.Cleanup(ctx, stdout)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, version.String())
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "manager: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "manager %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "manager %s: %v\n", args[0], err)
		return 1
	}
}
