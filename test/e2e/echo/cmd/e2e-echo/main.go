// Command e2e-echo is the end-to-end suite's backend and client in a
// container (the cluster driver):
//
//	e2e-echo serve NAME                 TCP 8080, UDP 5353, HTTP health 8081
//	e2e-echo greet HOST:PORT            prints the backend's name
//	e2e-echo ask HOST:PORT SOURCEPORT   one UDP question from a fixed port
//	e2e-echo hold HOST:PORT             holds a connection: stdin lines out, replies to stdout
//	e2e-echo get URL                    one HTTP GET (e.g. the health switch /fail and /ok)
//
// and, as root in the node's network namespace, the node's kernel as the
// lifecycle scenarios see it (see package echo):
//
//	e2e-echo kernel dump                IPVS services, ipsets and kubelvs0, one per line
//	e2e-echo kernel add-foreign         an IPVS service and an ipset of "another program"
//	e2e-echo kernel delete-foreign      removes them
package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/kubelvs/kubelvs/test/e2e/echo"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "e2e-echo:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	var d net.Dialer
	dial := echo.Dialer(d.DialContext)
	switch {
	case len(args) == 2 && args[0] == "serve":
		s, err := echo.Listen(args[1], "", 8080, 5353, 8081)
		if err != nil {
			return err
		}
		defer s.Close()
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		<-ctx.Done()
		return nil
	case len(args) == 2 && args[0] == "greet":
		name, err := echo.Greet(dial, args[1], 3*time.Second)
		if err != nil {
			return err
		}
		fmt.Println(name)
		return nil
	case len(args) == 3 && args[0] == "ask":
		sport, err := strconv.Atoi(args[2])
		if err != nil {
			return err
		}
		pc, err := net.ListenPacket("udp", fmt.Sprintf(":%d", sport))
		if err != nil {
			return err
		}
		defer pc.Close()
		ua, err := net.ResolveUDPAddr("udp", args[1])
		if err != nil {
			return err
		}
		name, err := echo.Ask(pc, ua, 2*time.Second)
		if err != nil {
			return err
		}
		fmt.Println(name)
		return nil
	case len(args) == 2 && args[0] == "hold":
		c, err := echo.Hold(dial, args[1], 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		fmt.Println(c.Backend)
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			r, err := c.Ping(sc.Text(), 5*time.Second)
			if err != nil {
				return err
			}
			fmt.Println(r)
		}
		return nil
	case len(args) == 2 && args[0] == "kernel":
		return kernel(args[1])
	case len(args) == 2 && args[0] == "get":
		c := http.Client{Timeout: 3 * time.Second}
		resp, err := c.Get(args[1])
		if err != nil {
			return err
		}
		resp.Body.Close()
		fmt.Println(resp.Status)
		return nil
	}
	return fmt.Errorf("usage: serve NAME | greet ADDR | ask ADDR SOURCEPORT | hold ADDR | get URL | kernel dump|add-foreign|delete-foreign")
}

func kernel(action string) error {
	lines, err := echo.Kernel(action)
	for _, l := range lines {
		fmt.Println(l)
	}
	return err
}
