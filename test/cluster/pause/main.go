//go:build linux

// Command pause is the sandbox process of the test cluster's pods: it holds
// the pod's namespaces open and does nothing else. It exits 0 on SIGINT or
// SIGTERM, and reaps every child that exits: as PID 1 of a pod that shares
// its process namespace, the pod's orphans become its children, and without
// a reaper they would stay zombies.
//
// The image (Dockerfile next to this file) is built by hack/build-images.sh.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "pause: not PID 1: only its own children are reaped")
	}
	os.Exit(wait(notify(), reap))
}

// notify delivers the signals pause acts on. SIGCHLD is caught, not left at
// its default, so that pause hears of every child that exits.
func notify() chan os.Signal {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	return sigs
}

// wait blocks until SIGINT or SIGTERM and returns the exit status, 0. On
// each SIGCHLD it calls reap.
func wait(sigs <-chan os.Signal, reap func() []int) int {
	for s := range sigs {
		if s == syscall.SIGCHLD {
			reap()
			continue
		}
		return 0
	}
	return 0
}

// reap collects every child that has exited, without blocking, and returns
// their PIDs. One SIGCHLD can stand for several children (the kernel does
// not queue a pending signal twice), so it loops until none is left.
func reap() []int {
	var pids []int
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return pids
		}
		pids = append(pids, pid)
	}
}
