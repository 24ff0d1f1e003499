//go:build linux

package main

import (
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"syscall"
	"testing"
	"time"
)

func TestWaitReturnsZeroOnInterruptOrTerminate(t *testing.T) {
	for _, stop := range []os.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(stop.String(), func(t *testing.T) {
			sigs := make(chan os.Signal, 4)
			sigs <- syscall.SIGCHLD
			sigs <- syscall.SIGCHLD
			sigs <- stop
			sigs <- syscall.SIGCHLD // after the stop: never read
			reaps := 0
			if got := wait(sigs, func() []int { reaps++; return nil }); got != 0 {
				t.Errorf("wait = %d, want 0", got)
			}
			if reaps != 2 {
				t.Errorf("reap called %d times, want 2 (once per SIGCHLD before %v)", reaps, stop)
			}
		})
	}
}

// The real signals, delivered to the test process: notify must catch
// SIGCHLD and SIGTERM (else the test process would die).
func TestNotifyCatchesChildAndTerminate(t *testing.T) {
	sigs := notify()
	t.Cleanup(func() { signal.Stop(sigs) })
	done := make(chan int)
	reaped := make(chan struct{}, 8)
	go func() { done <- wait(sigs, func() []int { reaped <- struct{}{}; return nil }) }()
	if err := syscall.Kill(os.Getpid(), syscall.SIGCHLD); err != nil {
		t.Fatal(err)
	}
	select {
	case <-reaped:
	case <-time.After(10 * time.Second):
		t.Fatal("no reap after SIGCHLD")
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-done:
		if got != 0 {
			t.Errorf("wait = %d after SIGTERM, want 0", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("wait did not return after SIGTERM")
	}
}

func TestReapCollectsExitedChildren(t *testing.T) {
	if got := reap(); len(got) != 0 {
		t.Fatalf("reap with no exited children = %v, want none", got)
	}
	var want []int
	var cmds []*exec.Cmd
	for range 3 {
		// The test binary itself, running no tests: exits at once.
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		want = append(want, cmd.Process.Pid)
		cmds = append(cmds, cmd)
	}
	var got []int
	for deadline := time.Now().Add(30 * time.Second); len(got) < len(want); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("reaped %v, want %v", got, want)
		}
		got = append(got, reap()...)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("reaped %v, want %v", got, want)
	}
	// Reaped means gone: the kernel has nothing left for Wait.
	for _, cmd := range cmds {
		if err := cmd.Wait(); err == nil {
			t.Errorf("pid %d: Wait succeeded after reap; the child was not reaped", cmd.Process.Pid)
		}
	}
}
